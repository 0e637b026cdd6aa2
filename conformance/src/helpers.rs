//! Shared client-helper template.

/// Client helpers whose code is the same for rumqttc's 3.1.1 and 5.0 clients (the types differ);
/// expanded in [`crate::v3`] and [`crate::v5`] after each imports its own types.
macro_rules! common_helpers {
    ($version:literal) => {
        /// Polls until `pick` returns Some; panics after [`crate::WAIT`].
        pub async fn until<T>(
            ev: &mut EventLoop,
            mut pick: impl FnMut(Result<Event, ConnectionError>) -> Option<T>,
        ) -> T {
            let found = tokio::time::timeout(crate::WAIT, async {
                loop {
                    if let Some(t) = pick(ev.poll().await) {
                        return t;
                    }
                }
            })
            .await;
            found.expect(concat!(
                "expected ",
                $version,
                " event did not arrive in time"
            ))
        }

        /// Connects and waits for a successful CONNACK.
        pub async fn connect(opts: MqttOptions) -> (AsyncClient, EventLoop) {
            let (c, mut ev) = AsyncClient::new(opts, 64);
            until(&mut ev, |e| match e {
                Ok(Event::Incoming(Packet::ConnAck(a))) => {
                    assert_eq!(a.code, ConnectReturnCode::Success);
                    Some(())
                }
                Err(e) => panic!("connect failed: {e}"),
                _ => None,
            })
            .await;
            (c, ev)
        }

        /// Tries to connect and returns the refusal code (panics if accepted).
        pub async fn refusal(opts: MqttOptions) -> ConnectReturnCode {
            let (_c, mut ev) = AsyncClient::new(opts, 8);
            until(&mut ev, |e| match e {
                Err(ConnectionError::ConnectionRefused(code)) => Some(code),
                Ok(Event::Incoming(Packet::ConnAck(_))) => panic!("connection was accepted"),
                Err(e) => panic!("unexpected error: {e}"),
                _ => None,
            })
            .await
        }

        /// Waits for a SUBACK.
        pub async fn suback(ev: &mut EventLoop) -> Vec<SubscribeReasonCode> {
            until(ev, |e| match e {
                Ok(Event::Incoming(Packet::SubAck(s))) => Some(s.return_codes),
                Err(e) => panic!("connection lost: {e}"),
                _ => None,
            })
            .await
        }

        /// Waits for the next PUBLISH.
        pub async fn next_publish(ev: &mut EventLoop) -> Publish {
            until(ev, |e| match e {
                Ok(Event::Incoming(Packet::Publish(p))) => Some(p),
                Err(e) => panic!("connection lost: {e}"),
                _ => None,
            })
            .await
        }

        /// Waits up to `wait` for the next PUBLISH (for waits longer than [`crate::WAIT`]).
        pub async fn next_publish_within(
            ev: &mut EventLoop,
            wait: std::time::Duration,
        ) -> Option<Publish> {
            tokio::time::timeout(wait, async {
                loop {
                    match ev.poll().await {
                        Ok(Event::Incoming(Packet::Publish(p))) => return p,
                        Err(e) => panic!("connection lost: {e}"),
                        _ => {}
                    }
                }
            })
            .await
            .ok()
        }
    };
}
