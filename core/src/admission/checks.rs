//! The admission checks that need nothing but the request, the configuration and what the client
//! may reach: pure functions, so every transport gets the same answer and tests need no hub.
//! The checks with state (rate buckets and monthly quotas at `now`, the subscriptions a session
//! holds) run in the engine after these.

use super::{ConnectRefusal, PublishRefusal, SubscribeRefusal};
use crate::acl::Access;
use crate::config::HubConfig;
use crate::data::message::Properties;
use crate::limits::{LimitId, Limited};
use crate::topic::{self, Filter};

/// Topic name or filter bounds (L-031 length, L-032 levels). The Link SDK's RRPC topics
/// (`/ext/rrpc/{id}/...`) wrap a device topic: the bounds apply to the wrapped one.
fn topic_bounds(cfg: &HubConfig, topic: &str) -> Result<(), Limited> {
    let topic = topic::rrpc_wrapped(topic).map_or(topic, |(_, wrapped)| wrapped);
    if topic.len() > cfg.max_topic_length {
        return Err(Limited::new(LimitId::TopicLength));
    }
    if topic.bytes().filter(|&b| b == b'/').count() > cfg.max_topic_levels {
        return Err(Limited::new(LimitId::TopicLevels));
    }
    Ok(())
}

/// MQTT 5 property bounds (L-026 to L-028).
fn property_bounds(cfg: &HubConfig, p: &Properties) -> Result<(), Limited> {
    if p.user.len() > cfg.max_user_properties {
        return Err(Limited::new(LimitId::UserProperties));
    }
    let long = |s: &str| s.chars().count() > cfg.max_user_property_length;
    if p.user.iter().any(|(k, v)| long(k) || long(v)) {
        return Err(Limited::new(LimitId::UserPropertyLength));
    }
    let max = cfg.max_request_response_length;
    let topic_long = p
        .response_topic
        .as_ref()
        .is_some_and(|t| t.chars().count() > max);
    let data_long = p.correlation_data.as_ref().is_some_and(|d| d.len() > max);
    if topic_long || data_long {
        return Err(Limited::new(LimitId::RequestResponseLength));
    }
    Ok(())
}

/// The keep-alive a connection gets (L-024): in the configured range it stays; outside it, a
/// client that can be told (MQTT 5's Server Keep Alive) gets the nearest allowed value and any
/// other is refused.
pub fn keep_alive(
    cfg: &HubConfig,
    requested: u16,
    can_announce: bool,
) -> Result<u16, ConnectRefusal> {
    let (min, max) = (cfg.keepalive_min_secs, cfg.keepalive_max_secs);
    let granted = requested.clamp(min, max);
    if granted != requested && !can_announce {
        return Err(ConnectRefusal::KeepAliveOutOfRange {
            got: requested,
            min,
            max,
        });
    }
    Ok(granted)
}

/// A will's topic: a topic name the client may publish to.
pub fn will(topic: &str, may: impl Fn(Access, &str) -> bool) -> Result<(), ConnectRefusal> {
    if topic::validate_name(topic).is_err() || !may(Access::Publish, topic) {
        return Err(ConnectRefusal::NotAuthorized(format!("will topic {topic}")));
    }
    Ok(())
}

/// A message: a topic name within bounds that the client may publish to, with properties within
/// bounds.
pub fn publish(
    cfg: &HubConfig,
    topic: &str,
    properties: &Properties,
    may: impl Fn(Access, &str) -> bool,
) -> Result<(), PublishRefusal> {
    topic::validate_name(topic).map_err(PublishRefusal::TopicInvalid)?;
    topic_bounds(cfg, topic).map_err(PublishRefusal::Limited)?;
    if !may(Access::Publish, topic) {
        return Err(PublishRefusal::NotAuthorized(topic.to_owned()));
    }
    property_bounds(cfg, properties).map_err(PublishRefusal::Limited)
}

/// How many filters one SUBSCRIBE may carry (L-033).
pub fn subscribe_count(cfg: &HubConfig, filters: usize) -> Result<(), SubscribeRefusal> {
    if filters > cfg.max_filters_per_subscribe {
        return Err(SubscribeRefusal::Limited(Limited::new(
            LimitId::FiltersPerSubscribe,
        )));
    }
    Ok(())
}

/// One filter of a SUBSCRIBE: well-formed (`$share/{group}/` allowed), within bounds, and one
/// the client may subscribe to.
pub fn subscription(
    cfg: &HubConfig,
    filter: &str,
    may: impl Fn(Access, &str) -> bool,
) -> Result<Filter, SubscribeRefusal> {
    let parsed = Filter::parse(filter).map_err(SubscribeRefusal::FilterInvalid)?;
    topic_bounds(cfg, filter).map_err(SubscribeRefusal::Limited)?;
    if !may(Access::Subscribe, &parsed.filter) {
        return Err(SubscribeRefusal::NotAuthorized(filter.to_owned()));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anything(_: Access, _: &str) -> bool {
        true
    }

    fn limit(r: Result<(), PublishRefusal>) -> Option<LimitId> {
        match r {
            Err(PublishRefusal::Limited(l)) => Some(l.limit),
            _ => None,
        }
    }

    #[test]
    fn a_message_is_checked_in_order_name_bounds_access_properties() {
        let cfg = HubConfig::default();
        let none = Properties::default();
        assert!(publish(&cfg, "a/b", &none, anything).is_ok());
        assert!(matches!(
            publish(&cfg, "a/+", &none, |_, _| false),
            Err(PublishRefusal::TopicInvalid(_))
        ));
        let deep = "a/".repeat(cfg.max_topic_levels + 1);
        assert_eq!(
            limit(publish(&cfg, &deep, &none, |_, _| false)),
            Some(LimitId::TopicLevels)
        );
        let long = "a".repeat(cfg.max_topic_length + 1);
        assert_eq!(
            limit(publish(&cfg, &long, &none, anything)),
            Some(LimitId::TopicLength)
        );
        let denied = publish(&cfg, "a/b", &none, |access, t| {
            access == Access::Subscribe && t == "a/b"
        });
        assert_eq!(denied, Err(PublishRefusal::NotAuthorized("a/b".into())));
        let many = Properties {
            user: (0..=cfg.max_user_properties)
                .map(|i| (i.to_string(), String::new()))
                .collect(),
            ..Properties::default()
        };
        assert_eq!(
            limit(publish(&cfg, "a/b", &many, anything)),
            Some(LimitId::UserProperties)
        );
        let long_value = Properties {
            user: vec![("k".into(), "v".repeat(cfg.max_user_property_length + 1))],
            ..Properties::default()
        };
        assert_eq!(
            limit(publish(&cfg, "a/b", &long_value, anything)),
            Some(LimitId::UserPropertyLength)
        );
        let response = Properties {
            response_topic: Some("r".repeat(cfg.max_request_response_length + 1)),
            ..Properties::default()
        };
        assert_eq!(
            limit(publish(&cfg, "a/b", &response, anything)),
            Some(LimitId::RequestResponseLength)
        );
    }

    #[test]
    fn a_keep_alive_outside_the_range_is_moved_for_those_who_can_be_told() {
        let cfg = HubConfig {
            keepalive_min_secs: 30,
            keepalive_max_secs: 1200,
            ..HubConfig::default()
        };
        assert_eq!(keep_alive(&cfg, 60, false), Ok(60));
        assert_eq!(keep_alive(&cfg, 5, true), Ok(30));
        assert_eq!(keep_alive(&cfg, 0, true), Ok(30));
        assert_eq!(keep_alive(&cfg, 5000, true), Ok(1200));
        assert_eq!(
            keep_alive(&cfg, 5, false),
            Err(ConnectRefusal::KeepAliveOutOfRange {
                got: 5,
                min: 30,
                max: 1200
            })
        );
        let open = HubConfig {
            keepalive_min_secs: 0,
            ..cfg
        };
        assert_eq!(
            keep_alive(&open, 0, false),
            Ok(0),
            "0 is off where the minimum allows it"
        );
    }

    #[test]
    fn a_filter_is_parsed_bounded_and_checked_without_its_share_prefix() {
        let cfg = HubConfig::default();
        let seen = std::cell::RefCell::new(Vec::new());
        let may = |access: Access, f: &str| {
            seen.borrow_mut().push((access, f.to_owned()));
            f.starts_with("mine/")
        };
        let parsed = subscription(&cfg, "$share/g/mine/#", may).expect("granted");
        assert_eq!(parsed.filter, "mine/#");
        assert_eq!(
            seen.borrow().as_slice(),
            [(Access::Subscribe, "mine/#".to_owned())]
        );
        assert!(matches!(
            subscription(&cfg, "mine/#/x", may),
            Err(SubscribeRefusal::FilterInvalid(_))
        ));
        assert_eq!(
            subscription(&cfg, "theirs/#", may).err(),
            Some(SubscribeRefusal::NotAuthorized("theirs/#".into()))
        );
        assert!(subscribe_count(&cfg, cfg.max_filters_per_subscribe).is_ok());
        assert_eq!(
            subscribe_count(&cfg, cfg.max_filters_per_subscribe + 1),
            Err(SubscribeRefusal::Limited(Limited::new(
                LimitId::FiltersPerSubscribe
            )))
        );
        assert_eq!(will("mine/will", may), Ok(()),);
        assert!(matches!(
            will("mine/+", may),
            Err(ConnectRefusal::NotAuthorized(_))
        ));
    }
}
