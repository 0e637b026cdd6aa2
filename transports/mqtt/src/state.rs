//! Per-connection protocol state, free of IO: packet ids and in-flight windows in both
//! directions, and MQTT 5 topic aliases. The connection driver owns one of each.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::num::NonZeroU16;

use ironhub_core::hub::Delivery;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AwaitedAck {
    /// QoS 1 sent, waiting for PUBACK.
    Ack,
    /// QoS 2 sent, waiting for PUBREC.
    Rec,
    /// PUBREL sent, waiting for PUBCOMP.
    Comp,
}

/// QoS 1/2 deliveries sent to the client and not yet acknowledged, bounded by the client's
/// Receive Maximum.
pub struct Outflight {
    next_id: u16,
    limit: usize,
    entries: BTreeMap<u16, (u64, AwaitedAck, Delivery)>,
    sent: u64,
    /// Ids the session's previous connection used for what is to be sent again under them:
    /// no new delivery takes one meanwhile (MQTT-4.4.0-1).
    reserved: HashSet<u16>,
}

impl Outflight {
    /// A window of at most `limit` (the client's Receive Maximum, at least 1).
    pub fn new(limit: u16) -> Self {
        Outflight {
            next_id: 0,
            limit: usize::from(limit.max(1)),
            entries: BTreeMap::new(),
            sent: 0,
            reserved: HashSet::new(),
        }
    }

    /// Keeps `ids` for [`Outflight::register_again`]: new deliveries take others.
    pub fn reserve(&mut self, ids: impl IntoIterator<Item = NonZeroU16>) {
        self.reserved.extend(ids.into_iter().map(NonZeroU16::get));
    }

    /// Whether another QoS 1/2 delivery may be sent now.
    pub fn has_room(&self) -> bool {
        self.entries.len() < self.limit
    }

    /// Takes a packet id for a QoS 1/2 delivery; the caller checked `has_room`.
    pub fn register(&mut self, delivery: Delivery, exactly_once: bool) -> NonZeroU16 {
        loop {
            self.next_id = self.next_id.wrapping_add(1);
            if self.next_id != 0
                && !self.entries.contains_key(&self.next_id)
                && !self.reserved.contains(&self.next_id)
            {
                break;
            }
        }
        let stage = if exactly_once {
            AwaitedAck::Rec
        } else {
            AwaitedAck::Ack
        };
        self.sent += 1;
        self.entries
            .insert(self.next_id, (self.sent, stage, delivery));
        NonZeroU16::new(self.next_id).expect("ids skip zero")
    }

    /// Takes `id` again for a delivery the session's previous connection sent under it
    /// (MQTT-4.4.0-1); `released`: its PUBREC came, PUBCOMP is awaited. The caller checked
    /// `has_room`, and sends these before any new delivery takes an id.
    pub fn register_again(
        &mut self,
        id: NonZeroU16,
        delivery: Delivery,
        exactly_once: bool,
        released: bool,
    ) {
        let stage = match (exactly_once, released) {
            (false, _) => AwaitedAck::Ack,
            (true, false) => AwaitedAck::Rec,
            (true, true) => AwaitedAck::Comp,
        };
        self.reserved.remove(&id.get());
        self.sent += 1;
        let before = self.entries.insert(id.get(), (self.sent, stage, delivery));
        debug_assert!(before.is_none(), "a reserved id is free");
    }

    /// PUBACK: the delivery is done. None if the id was not awaiting a PUBACK.
    pub fn puback(&mut self, id: NonZeroU16) -> Option<Delivery> {
        match self.entries.get(&id.get()) {
            Some((_, AwaitedAck::Ack, _)) => self.entries.remove(&id.get()).map(|(_, _, d)| d),
            _ => None,
        }
    }

    /// PUBREC: answer with PUBREL. Returns whether the id was known (in either QoS 2 stage, so a
    /// repeated PUBREC is answered again).
    pub fn pubrec(&mut self, id: NonZeroU16) -> bool {
        match self.entries.get_mut(&id.get()) {
            Some((_, stage @ (AwaitedAck::Rec | AwaitedAck::Comp), _)) => {
                *stage = AwaitedAck::Comp;
                true
            }
            _ => false,
        }
    }

    /// PUBACK or PUBREC with a reason code of 0x80 or more: the client refused the delivery,
    /// which is done. None if the id was not awaiting either.
    pub fn refused(&mut self, id: NonZeroU16) -> Option<Delivery> {
        match self.entries.get(&id.get()) {
            Some((_, AwaitedAck::Ack | AwaitedAck::Rec, _)) => {
                self.entries.remove(&id.get()).map(|(_, _, d)| d)
            }
            _ => None,
        }
    }

    /// PUBCOMP: the delivery is done.
    pub fn pubcomp(&mut self, id: NonZeroU16) -> Option<Delivery> {
        match self.entries.get(&id.get()) {
            Some((_, AwaitedAck::Comp, _)) => self.entries.remove(&id.get()).map(|(_, _, d)| d),
            _ => None,
        }
    }

    /// Drops an id whatever its stage (a delivery that could not be sent).
    pub fn forget(&mut self, id: NonZeroU16) {
        self.entries.remove(&id.get());
    }

    /// Everything still unacknowledged, in the order it was sent: its packet id, whether its
    /// PUBREC came, and the delivery.
    pub fn into_unacked(self) -> Vec<(NonZeroU16, bool, Delivery)> {
        let mut v: Vec<(u64, NonZeroU16, bool, Delivery)> = self
            .entries
            .into_iter()
            .map(|(id, (n, stage, d))| {
                let id = NonZeroU16::new(id).expect("ids skip zero");
                (n, id, stage == AwaitedAck::Comp, d)
            })
            .collect();
        v.sort_by_key(|(n, ..)| *n);
        v.into_iter().map(|(_, id, rel, d)| (id, rel, d)).collect()
    }
}

/// QoS 2 publishes received (PUBREC sent) and waiting for PUBREL, bounded by the Receive
/// Maximum we advertise.
pub struct InboundQos2 {
    limit: usize,
    pending: HashSet<u16>,
}

impl InboundQos2 {
    /// At most `limit` pending.
    pub fn new(limit: u16) -> Self {
        InboundQos2 {
            limit: usize::from(limit),
            pending: HashSet::new(),
        }
    }

    /// Whether the id is already pending (a retransmission: do not publish twice).
    pub fn is_pending(&self, id: NonZeroU16) -> bool {
        self.pending.contains(&id.get())
    }

    /// Whether one more can be accepted.
    pub fn has_room(&self) -> bool {
        self.pending.len() < self.limit
    }

    /// Records a published QoS 2 message.
    pub fn insert(&mut self, id: NonZeroU16) {
        self.pending.insert(id.get());
    }

    /// PUBREL: forgets the id (returns whether it was pending).
    pub fn release(&mut self, id: NonZeroU16) -> bool {
        self.pending.remove(&id.get())
    }
}

/// Why a topic alias was refused (MQTT 5 reason 0x94).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AliasError {
    /// Alias 0 or above the maximum we advertised.
    #[error("topic alias {0} out of range")]
    OutOfRange(u16),
    /// Empty topic with an alias never set.
    #[error("topic alias {0} is not set")]
    Unknown(u16),
}

/// Inbound topic aliases (client to server).
pub struct TopicAliases {
    max: u16,
    map: HashMap<u16, String>,
}

impl TopicAliases {
    /// Accepts aliases 1..=max.
    pub fn new(max: u16) -> Self {
        TopicAliases {
            max,
            map: HashMap::new(),
        }
    }

    /// Resolves a PUBLISH's topic: sets the alias when both are given, looks it up when the topic
    /// is empty.
    pub fn resolve(
        &mut self,
        topic: &str,
        alias: Option<NonZeroU16>,
    ) -> Result<String, AliasError> {
        let Some(alias) = alias.map(NonZeroU16::get) else {
            return Ok(topic.to_owned());
        };
        if alias > self.max {
            return Err(AliasError::OutOfRange(alias));
        }
        if topic.is_empty() {
            return self
                .map
                .get(&alias)
                .cloned()
                .ok_or(AliasError::Unknown(alias));
        }
        self.map.insert(alias, topic.to_owned());
        Ok(topic.to_owned())
    }
}

/// Topic aliases this server gives its deliveries to an MQTT 5 client that accepts them
/// (its CONNECT's Topic Alias Maximum): the first `max` distinct topics get one each, sent with
/// the name once and by alias only afterwards; later topics go by name. Nothing is reassigned: a
/// connection's hot topics are usually its first ones, and a reassignment costs the name again.
pub struct OutboundAliases {
    max: u16,
    by_topic: HashMap<String, NonZeroU16>,
}

impl OutboundAliases {
    /// Aliases 1..=`max`; None when the client takes none.
    pub fn new(max: u16) -> Option<Box<Self>> {
        (max > 0).then(|| {
            Box::new(OutboundAliases {
                max,
                by_topic: HashMap::new(),
            })
        })
    }

    /// How to send `topic`: its alias if it has one (`Known`), a new alias to announce with the
    /// name (`New`, kept only once [`OutboundAliases::assigned`] says the client got it), or the
    /// name alone (`None`).
    pub fn lookup(&self, topic: &str) -> Option<Alias> {
        if let Some(alias) = self.by_topic.get(topic) {
            return Some(Alias::Known(*alias));
        }
        let next = u16::try_from(self.by_topic.len() + 1).ok()?;
        (next <= self.max)
            .then(|| NonZeroU16::new(next).map(Alias::New))
            .flatten()
    }

    /// The PUBLISH that announced `alias` for `topic` went out.
    pub fn assigned(&mut self, topic: &str, alias: NonZeroU16) {
        self.by_topic.insert(topic.to_owned(), alias);
    }
}

/// An outbound alias decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alias {
    /// Send the alias and an empty topic name.
    Known(NonZeroU16),
    /// Send the name with this alias, which the client then keeps.
    New(NonZeroU16),
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use ironhub_core::data::message::{Message, Origin, Properties, QoS};
    use std::sync::Arc;

    fn delivery(n: u8) -> Delivery {
        Delivery {
            message: Arc::new(Message {
                tenant: "t".into(),
                topic: format!("t/{n}"),
                payload: Bytes::new(),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: Properties::default(),
                expires_at_ms: None,
                origin: Origin::Hub,
                received_at_ms: 0,
            }),
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_ids: Box::default(),
            stored_seq: None,
        }
    }

    #[test]
    fn outflight_respects_receive_maximum_and_keeps_order() {
        let mut out = Outflight::new(2);
        let a = out.register(delivery(1), false);
        let b = out.register(delivery(2), true);
        assert!(!out.has_room());
        assert!(out.puback(b).is_none(), "QoS 2 id does not take a PUBACK");
        assert!(out.pubcomp(b).is_none(), "PUBCOMP before PUBREC is ignored");
        assert!(out.pubrec(b));
        assert!(out.pubrec(b), "a repeated PUBREC is answered again");
        assert_eq!(out.pubcomp(b).unwrap().message.topic, "t/2");
        assert!(out.has_room());
        let c = out.register(delivery(3), false);
        assert_ne!(a, c);
        assert!(!out.pubrec(c), "a QoS 1 id takes no PUBREC");
        let d = out.register(delivery(4), true);
        assert!(out.pubrec(d));
        let left: Vec<(String, bool)> = out
            .into_unacked()
            .iter()
            .map(|(_, released, d)| (d.message.topic.clone(), *released))
            .collect();
        assert_eq!(
            left,
            vec![
                ("t/1".into(), false),
                ("t/3".into(), false),
                ("t/4".into(), true)
            ],
            "in the order sent, with whether PUBREL is what is owed"
        );
    }

    #[test]
    fn ids_kept_for_resending_are_not_taken_by_new_deliveries() {
        let mut out = Outflight::new(10);
        let one = NonZeroU16::new(1).unwrap();
        let two = NonZeroU16::new(2).unwrap();
        out.reserve([one, two]);
        let fresh = out.register(delivery(1), false);
        assert_eq!(
            fresh.get(),
            3,
            "1 and 2 wait for the messages they were sent with"
        );
        out.register_again(two, delivery(2), true, true);
        assert!(out.pubcomp(two).is_some(), "resent under 2, PUBREL owed");
        let next = out.register(delivery(3), false);
        assert_eq!(next.get(), 4);
    }

    #[test]
    fn packet_ids_wrap_and_skip_ids_in_use() {
        let mut out = Outflight::new(u16::MAX);
        let first = out.register(delivery(0), false);
        for _ in 0..(u16::MAX - 2) {
            let id = out.register(delivery(0), false);
            out.puback(id).unwrap();
        }
        let id = out.register(delivery(0), false);
        assert_ne!(id, first, "id still in flight is skipped after wrapping");
    }

    #[test]
    fn inbound_qos2_detects_retransmissions() {
        let mut q = InboundQos2::new(1);
        let id = NonZeroU16::new(5).unwrap();
        assert!(!q.is_pending(id));
        q.insert(id);
        assert!(q.is_pending(id));
        assert!(!q.has_room());
        assert!(q.release(id));
        assert!(!q.release(id));
    }

    #[test]
    fn topic_aliases_resolve() {
        let mut a = TopicAliases::new(2);
        let one = NonZeroU16::new(1);
        assert_eq!(a.resolve("x/y", one).unwrap(), "x/y");
        assert_eq!(a.resolve("", one).unwrap(), "x/y");
        assert_eq!(
            a.resolve("", NonZeroU16::new(2)),
            Err(AliasError::Unknown(2))
        );
        assert_eq!(
            a.resolve("z", NonZeroU16::new(3)),
            Err(AliasError::OutOfRange(3))
        );
        assert_eq!(a.resolve("plain", None).unwrap(), "plain");
    }

    #[test]
    fn outbound_aliases_name_a_topic_once_then_use_its_alias() {
        assert!(
            OutboundAliases::new(0).is_none(),
            "a client that takes none gets none"
        );
        let mut aliases = OutboundAliases::new(2).unwrap();
        let one = NonZeroU16::new(1).unwrap();
        let two = NonZeroU16::new(2).unwrap();
        assert_eq!(aliases.lookup("a"), Some(Alias::New(one)));
        assert_eq!(
            aliases.lookup("a"),
            Some(Alias::New(one)),
            "not kept until the announcing PUBLISH went out"
        );
        aliases.assigned("a", one);
        assert_eq!(aliases.lookup("a"), Some(Alias::Known(one)));
        assert_eq!(aliases.lookup("b"), Some(Alias::New(two)));
        aliases.assigned("b", two);
        assert_eq!(
            aliases.lookup("c"),
            None,
            "past the client's maximum: by name"
        );
        assert_eq!(aliases.lookup("b"), Some(Alias::Known(two)));
    }
}
