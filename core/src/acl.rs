//! Topic ACL: which topics a device may publish to and which filters it may subscribe to, plus the
//! allow/deny rules of the open-broker mode.
//!
//! A device owns `/sys/{pk}/{dn}/...` and `/{pk}/{dn}/user/...`, publishes shadow updates on
//! `/shadow/update/{pk}/{dn}`, reads its shadow on `/shadow/get/{pk}/{dn}`, hears its product's
//! broadcasts on `/broadcast/{pk}/...`, asks the time on `/ext/ntp/{pk}/{dn}/request` (answered
//! on `.../response`), reports its firmware on `/ota/device/inform/{pk}/{dn}` (and hears of
//! upgrades on `/ota/device/upgrade/{pk}/{dn}`, reporting their progress on
//! `/ota/device/progress/{pk}/{dn}`), logs its sub-devices in on `/ext/session/{pk}/{dn}/combine/...` (a
//! gateway) and takes RRPC calls on `/ext/rrpc/{id}` + its `sys` or `user` topics. Nothing else;
//! a gateway also uses the namespaces of the sub-devices logged in through it (as they).

use serde::{Deserialize, Serialize};

use crate::topic;

/// What a client wants to do with a topic.
#[derive(schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// PUBLISH to a topic name.
    Publish,
    /// SUBSCRIBE with a topic filter.
    Subscribe,
}

/// The namespaces a device may publish to: `{pk}` and `{dn}` stand for its own names, which must
/// be written literally (no wildcard may widen them); `+` stands for any one level (the request
/// id of RRPC topics) and a final `#` for one or more levels.
const PUBLISH_SPACES: &[&str] = &[
    "/sys/{pk}/{dn}/#",
    "/{pk}/{dn}/user/#",
    "/shadow/update/{pk}/{dn}",
    "/ext/ntp/{pk}/{dn}/request",
    "/ext/session/{pk}/{dn}/combine/#",
    "/ota/device/inform/{pk}/{dn}",
    "/ota/device/progress/{pk}/{dn}",
    "/ext/rrpc/+/sys/{pk}/{dn}/#",
    "/ext/rrpc/+/{pk}/{dn}/user/#",
];

/// The namespaces a device may subscribe to (as [`PUBLISH_SPACES`]).
const SUBSCRIBE_SPACES: &[&str] = &[
    "/sys/{pk}/{dn}/#",
    "/{pk}/{dn}/user/#",
    "/shadow/get/{pk}/{dn}",
    "/broadcast/{pk}/#",
    "/ext/ntp/{pk}/{dn}/response",
    "/ext/session/{pk}/{dn}/combine/#",
    "/ota/device/upgrade/{pk}/{dn}",
    "/ext/rrpc/+/sys/{pk}/{dn}/#",
    "/ext/rrpc/+/{pk}/{dn}/user/#",
];

/// Whether device `{pk}/{dn}` may use `topic` (a name to publish, or a filter to subscribe).
pub fn device_may(access: Access, pk: &str, dn: &str, topic: &str) -> bool {
    let spaces = match access {
        Access::Publish => PUBLISH_SPACES,
        Access::Subscribe => SUBSCRIBE_SPACES,
    };
    spaces.iter().any(|space| within(space, pk, dn, topic))
}

/// Whether `topic` lies in `space` (see [`PUBLISH_SPACES`]).
fn within(space: &str, pk: &str, dn: &str, topic: &str) -> bool {
    let mut levels = topic.split('/');
    for owned in space.split('/') {
        let literal = match owned {
            "{pk}" => pk,
            "{dn}" => dn,
            "#" => return levels.next().is_some(),
            "+" => {
                if levels.next().is_none() {
                    return false;
                }
                continue;
            }
            level => level,
        };
        if levels.next() != Some(literal) {
            return false;
        }
    }
    levels.next().is_none()
}

/// One rule of the open-broker mode, tried in order; the first whose filter matches decides.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// Topic filter the rule covers (a publish topic or a subscribe filter is checked against it).
    pub filter: String,
    /// Which operations the rule covers; both when absent.
    #[serde(default)]
    pub access: Option<Access>,
    /// Allow or deny.
    pub allow: bool,
}

/// Evaluates open-broker rules; with no matching rule, access is allowed.
///
/// A publish is decided by the first rule whose filter matches its topic. A subscription is
/// refused only when its filter can match nothing but denied topics: a deny rule covers it
/// (`secret/+` under `secret/#`) before any allow rule overlaps it. A filter that overlaps a
/// denied topic without being covered (`#` while `secret/#` is denied) is granted, and
/// [`open_broker_delivers`] keeps the denied topics' messages from it.
pub fn open_broker_may(rules: &[Rule], access: Access, topic_or_filter: &str) -> bool {
    let applying = rules
        .iter()
        .filter(|rule| rule.access.is_none_or(|a| a == access));
    match access {
        Access::Publish if topic::is_sys(topic_or_filter) => false,
        Access::Publish => applying
            .into_iter()
            .find(|rule| topic::matches(&rule.filter, topic_or_filter))
            .is_none_or(|rule| rule.allow),
        Access::Subscribe => {
            for rule in applying.filter(|rule| filters_overlap(&rule.filter, topic_or_filter)) {
                if rule.allow {
                    return true;
                }
                if covers(&rule.filter, topic_or_filter) {
                    return false;
                }
            }
            true
        }
    }
}

/// Whether an open-broker subscriber may receive a message on `topic`: the first subscribe
/// rule matching the topic decides (checked at delivery, for filters granted wider than the
/// rules allow).
pub fn open_broker_delivers(rules: &[Rule], topic: &str) -> bool {
    rules
        .iter()
        .filter(|rule| rule.access.is_none_or(|a| a == Access::Subscribe))
        .find(|rule| topic::matches(&rule.filter, topic))
        .is_none_or(|rule| rule.allow)
}

/// Whether the rules can deny a subscriber a message at all (then deliveries are checked).
pub fn open_broker_denies_subscribers(rules: &[Rule]) -> bool {
    rules
        .iter()
        .any(|rule| !rule.allow && rule.access.is_none_or(|a| a == Access::Subscribe))
}

/// Whether every topic `inner` matches is matched by `outer` too.
fn covers(outer: &str, inner: &str) -> bool {
    let mut o = outer.split('/');
    let mut i = inner.split('/');
    loop {
        match (o.next(), i.next()) {
            (Some("#"), _) => return true,
            (None, None) => return true,
            (Some("+"), Some(level)) if level != "#" => {}
            (Some(p), Some(q)) if p == q && p != "+" && p != "#" => {}
            _ => return false,
        }
    }
}

/// Whether some topic could match both filters.
fn filters_overlap(a: &str, b: &str) -> bool {
    let mut x = a.split('/');
    let mut y = b.split('/');
    loop {
        match (x.next(), y.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (None, None) => return true,
            (Some("+"), Some(_)) | (Some(_), Some("+")) => {}
            (Some(p), Some(q)) if p == q => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_owns_its_topics_only() {
        let p = Access::Publish;
        let s = Access::Subscribe;
        assert!(device_may(
            p,
            "pk",
            "dn",
            "/sys/pk/dn/thing/event/property/post"
        ));
        assert!(device_may(p, "pk", "dn", "/pk/dn/user/update"));
        assert!(device_may(p, "pk", "dn", "/shadow/update/pk/dn"));
        assert!(!device_may(
            p,
            "pk",
            "dn",
            "/sys/pk/other/thing/event/property/post"
        ));
        assert!(!device_may(p, "pk", "dn", "/sys/pk/dn"));
        assert!(!device_may(p, "pk", "dn", "/broadcast/pk/x"));
        assert!(!device_may(p, "pk", "dn", "/shadow/update/pk/other"));
        assert!(device_may(s, "pk", "dn", "/pk/dn/user/#"));
        assert!(device_may(s, "pk", "dn", "/sys/pk/dn/thing/service/+"));
        assert!(device_may(s, "pk", "dn", "/broadcast/pk/#"));
        assert!(device_may(s, "pk", "dn", "/shadow/get/pk/dn"));
        assert!(!device_may(s, "pk", "dn", "/sys/pk/+/thing/#"));
        assert!(!device_may(s, "pk", "dn", "#"));
        assert!(!device_may(s, "pk", "dn", "/broadcast/other/#"));
        assert!(!device_may(s, "pk", "dn", "/+/dn/user/#"));
        assert!(device_may(p, "pk", "dn", "/ext/ntp/pk/dn/request"));
        assert!(device_may(s, "pk", "dn", "/ext/ntp/pk/dn/response"));
        assert!(!device_may(p, "pk", "dn", "/ext/ntp/pk/dn/response"));
        assert!(!device_may(s, "pk", "dn", "/ext/ntp/pk/+/response"));
        assert!(!device_may(s, "pk", "dn", "/ext/ntp/pk/dn/response/x"));
        assert!(!device_may(p, "pk", "dn", "/ext/ntp/pk/other/request"));
        assert!(device_may(p, "pk", "dn", "/ext/rrpc/17/pk/dn/user/cmd"));
        assert!(device_may(
            p,
            "pk",
            "dn",
            "/ext/rrpc/17/sys/pk/dn/thing/service/s"
        ));
        assert!(device_may(s, "pk", "dn", "/ext/rrpc/+/pk/dn/user/cmd"));
        assert!(device_may(
            s,
            "pk",
            "dn",
            "/ext/rrpc/+/sys/pk/dn/thing/service/+"
        ));
        assert!(!device_may(p, "pk", "dn", "/ext/rrpc/17/pk/other/user/cmd"));
        assert!(!device_may(s, "pk", "dn", "/ext/rrpc/#"));
        assert!(!device_may(s, "pk", "dn", "/ext/rrpc/+/+/dn/user/cmd"));
    }

    #[test]
    fn open_broker_rules_first_match_wins() {
        let rules = vec![
            Rule {
                filter: "secret/#".into(),
                access: Some(Access::Subscribe),
                allow: false,
            },
            Rule {
                filter: "ro/#".into(),
                access: Some(Access::Publish),
                allow: false,
            },
        ];
        assert!(!open_broker_may(&rules, Access::Subscribe, "secret/a"));
        assert!(!open_broker_may(&rules, Access::Subscribe, "secret/+/x"));
        assert!(!open_broker_may(&rules, Access::Subscribe, "secret/#"));
        assert!(
            open_broker_may(&rules, Access::Subscribe, "#"),
            "# overlaps secret/# without being covered: granted, filtered at delivery"
        );
        assert!(open_broker_may(&rules, Access::Subscribe, "+/a"));
        assert!(
            !open_broker_may(&rules, Access::Subscribe, "secret"),
            "secret/# covers secret too"
        );
        assert!(open_broker_may(&rules, Access::Publish, "secret/a"));
        assert!(
            !open_broker_may(&[], Access::Publish, "$SYS/broker/uptime"),
            "$SYS is the hub's own, whatever the rules"
        );
        assert!(!open_broker_may(&[], Access::Publish, "$SYS"));
        assert!(open_broker_may(&[], Access::Publish, "$SYSTEM/x"));
        assert!(open_broker_may(&[], Access::Subscribe, "$SYS/#"));
        assert!(!open_broker_may(&rules, Access::Publish, "ro/x"));
        assert!(open_broker_may(&rules, Access::Subscribe, "ro/x"));
        assert!(open_broker_may(&rules, Access::Publish, "anything"));
    }

    #[test]
    fn an_allow_before_a_deny_grants_what_it_overlaps() {
        let rules = vec![
            Rule {
                filter: "secret/public/#".into(),
                access: None,
                allow: true,
            },
            Rule {
                filter: "secret/#".into(),
                access: None,
                allow: false,
            },
        ];
        assert!(open_broker_may(
            &rules,
            Access::Subscribe,
            "secret/public/x"
        ));
        assert!(open_broker_may(&rules, Access::Subscribe, "secret/+/x"));
        assert!(!open_broker_may(
            &rules,
            Access::Subscribe,
            "secret/private/#"
        ));
        assert!(open_broker_delivers(&rules, "secret/public/x"));
        assert!(!open_broker_delivers(&rules, "secret/private/x"));
        assert!(!open_broker_delivers(&rules, "secret"));
        assert!(open_broker_delivers(&rules, "news"));
        assert!(open_broker_denies_subscribers(&rules));
        assert!(!open_broker_denies_subscribers(&rules[..1]));
    }

    #[test]
    fn one_filter_covers_another_level_by_level() {
        assert!(covers("#", "a/+/#"));
        assert!(covers("a/#", "a"));
        assert!(covers("a/+", "a/b"));
        assert!(covers("a/+", "a/+"));
        assert!(!covers("a/+", "a/#"));
        assert!(!covers("a/b", "a/+"));
        assert!(!covers("a/+", "a/b/c"));
        assert!(!covers("a/b/c", "a/b"));
        assert!(covers("a/b", "a/b"));
    }
}
