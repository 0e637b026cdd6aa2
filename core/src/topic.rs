//! Topic names, topic filters (`+`, `#`), shared subscriptions and the subscription tree.

use crate::FastMap;

/// Why a topic name or filter was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Empty string.
    #[error("topic is empty")]
    Empty,
    /// A topic name (not a filter) contains `+` or `#`.
    #[error("topic name contains a wildcard")]
    WildcardInName,
    /// `#` not alone in the last level, or `+` not alone in its level.
    #[error("wildcard must occupy a whole level, and # only the last one")]
    MisplacedWildcard,
    /// The NUL character is forbidden (MQTT-4.7.3-2).
    #[error("topic contains NUL")]
    Nul,
    /// `$share/group/filter` with an empty or wildcard group, or no filter.
    #[error("malformed shared subscription")]
    BadShare,
}

/// What follows a device's names in `topic` when it is `{prefix}{pk}/{dn}...` (`""` when the
/// topic ends with them): the one way the hub recognizes a device's own topics.
pub fn after_device<'t>(topic: &'t str, prefix: &str, pk: &str, dn: &str) -> Option<&'t str> {
    topic
        .strip_prefix(prefix)?
        .strip_prefix(pk)?
        .strip_prefix('/')?
        .strip_prefix(dn)
}

/// The request id and the wrapped topic of a Link SDK RRPC topic, `/ext/rrpc/{id}{topic}`
/// (`topic` starts with `/`; `id` is `+` in the filter a device subscribes with).
pub fn rrpc_wrapped(topic: &str) -> Option<(&str, &str)> {
    let rest = topic.strip_prefix("/ext/rrpc/")?;
    let slash = rest.find('/')?;
    Some(rest.split_at(slash))
}

/// The device whose namespace a topic (or a filter) lies in: `/sys/{pk}/{dn}/...`,
/// `/{pk}/{dn}/user/...`, `/shadow/update|get/{pk}/{dn}`, `/ext/ntp|session/{pk}/{dn}/...`,
/// `/ota/device/inform|upgrade|progress/{pk}/{dn}`, and
/// any of these wrapped as `/ext/rrpc/{id}/...`. The names are literal: a wildcard in their place
/// names no device.
pub fn device_space(topic: &str) -> Option<(&str, &str)> {
    if let Some((_, wrapped)) = rrpc_wrapped(topic) {
        return device_space(wrapped);
    }
    let mut levels = topic.strip_prefix('/')?.split('/');
    let (a, b, c, d) = (levels.next()?, levels.next()?, levels.next(), levels.next());
    let named = |pk: &str, dn: &str| {
        let literal = |l: &str| !l.is_empty() && l != "+" && l != "#";
        literal(pk) && literal(dn)
    };
    let (pk, dn) = match (a, b, c, d) {
        ("sys", pk, Some(dn), Some(_)) => (pk, dn),
        ("shadow", "update" | "get", Some(pk), Some(dn)) if levels.next().is_none() => (pk, dn),
        ("ext", "ntp" | "session", Some(pk), Some(dn)) if levels.next().is_some() => (pk, dn),
        ("ota", "device", Some("inform" | "upgrade" | "progress"), Some(pk)) => {
            (pk, levels.next()?)
        }
        ("sys" | "shadow" | "ext" | "broadcast" | "ota", ..) => return None,
        (pk, dn, Some("user"), Some(_)) => (pk, dn),
        _ => return None,
    };
    named(pk, dn).then_some((pk, dn))
}

/// What [`validate_name`] accepts, as a regular expression (for API schemas).
pub const NAME_PATTERN: &str = "^[^+#\\u0000]+$";

/// Checks a topic name a client publishes to.
pub fn validate_name(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.contains('\0') {
        return Err(TopicError::Nul);
    }
    if topic.contains(['+', '#']) {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Checks a topic filter (without a `$share/` prefix).
pub fn validate_filter(filter: &str) -> Result<(), TopicError> {
    if filter.is_empty() {
        return Err(TopicError::Empty);
    }
    if filter.contains('\0') {
        return Err(TopicError::Nul);
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        let is_last = i + 1 == levels.len();
        if level.contains('#') && (*level != "#" || !is_last) {
            return Err(TopicError::MisplacedWildcard);
        }
        if level.contains('+') && *level != "+" {
            return Err(TopicError::MisplacedWildcard);
        }
    }
    Ok(())
}

/// A subscription filter, possibly shared (`$share/{group}/{filter}`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Filter {
    /// The shared-subscription group, if any.
    pub share_group: Option<String>,
    /// The filter proper.
    pub filter: String,
}

impl Filter {
    /// Parses and validates a filter as it appears in SUBSCRIBE.
    pub fn parse(raw: &str) -> Result<Self, TopicError> {
        if let Some(rest) = raw.strip_prefix("$share/") {
            let (group, filter) = rest.split_once('/').ok_or(TopicError::BadShare)?;
            if group.is_empty() || group.contains(['+', '#']) || filter.is_empty() {
                return Err(TopicError::BadShare);
            }
            validate_filter(filter)?;
            return Ok(Filter {
                share_group: Some(group.to_owned()),
                filter: filter.to_owned(),
            });
        }
        validate_filter(raw)?;
        Ok(Filter {
            share_group: None,
            filter: raw.to_owned(),
        })
    }

    /// The filter as the client wrote it.
    pub fn raw(&self) -> String {
        match &self.share_group {
            Some(g) => format!("$share/{g}/{}", self.filter),
            None => self.filter.clone(),
        }
    }
}

/// Whether `filter` matches `topic` (MQTT 4.7; topics starting with `$` are not matched by a
/// wildcard in the first level, MQTT-4.7.2-1).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// A trie of topic filters, one level per node, holding values of type `T` at filter ends.
///
/// Matching costs grow with the topic's depth and the wildcard branches taken, not with the
/// number of subscriptions.
#[derive(Debug)]
pub struct TopicTree<T> {
    root: Node<T>,
}

#[derive(Debug)]
struct Node<T> {
    children: FastMap<Box<str>, Node<T>>,
    values: Vec<T>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node {
            children: FastMap::default(),
            values: Vec::new(),
        }
    }
}

impl<T> Default for TopicTree<T> {
    fn default() -> Self {
        TopicTree {
            root: Node::default(),
        }
    }
}

impl<T> TopicTree<T> {
    /// Adds `value` under `filter`; an existing value for which `same` holds is replaced.
    pub fn insert(&mut self, filter: &str, value: T, same: impl Fn(&T) -> bool) {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = node.children.entry(level.into()).or_default();
        }
        if let Some(existing) = node.values.iter_mut().find(|v| same(v)) {
            *existing = value;
        } else {
            node.values.push(value);
        }
    }

    /// Removes the values under `filter` for which `pred` holds; prunes empty branches.
    pub fn remove(&mut self, filter: &str, pred: impl Fn(&T) -> bool) -> usize {
        fn go<T>(node: &mut Node<T>, levels: &[&str], pred: &dyn Fn(&T) -> bool) -> usize {
            match levels.split_first() {
                None => {
                    let before = node.values.len();
                    node.values.retain(|v| !pred(v));
                    before - node.values.len()
                }
                Some((first, rest)) => {
                    let Some(child) = node.children.get_mut(*first) else {
                        return 0;
                    };
                    let removed = go(child, rest, pred);
                    if child.values.is_empty() && child.children.is_empty() {
                        node.children.remove(*first);
                    }
                    removed
                }
            }
        }
        let levels: Vec<&str> = filter.split('/').collect();
        go(&mut self.root, &levels, &pred)
    }

    /// Calls `visit` with every value whose filter matches `topic`.
    pub fn for_each_match(&self, topic: &str, mut visit: impl FnMut(&T)) {
        let levels: Vec<&str> = topic.split('/').collect();
        let dollar = topic.starts_with('$');
        Self::walk(&self.root, &levels, 0, dollar, &mut visit);
    }

    fn walk(
        node: &Node<T>,
        levels: &[&str],
        depth: usize,
        dollar: bool,
        visit: &mut impl FnMut(&T),
    ) {
        let wildcards_allowed = !(dollar && depth == 0);
        if wildcards_allowed && let Some(hash) = node.children.get("#") {
            hash.values.iter().for_each(&mut *visit);
        }
        let Some((first, rest)) = levels.split_first() else {
            node.values.iter().for_each(visit);
            return;
        };
        if let Some(child) = node.children.get(*first) {
            Self::walk(child, rest, depth + 1, dollar, visit);
        }
        if wildcards_allowed && let Some(plus) = node.children.get("+") {
            Self::walk(plus, rest, depth + 1, dollar, visit);
        }
    }

    /// Whether the tree holds no value.
    pub fn is_empty(&self) -> bool {
        self.root.children.is_empty() && self.root.values.is_empty()
    }
}

/// Whether `topic` is the hub's own `$SYS` tree, which no client may publish on.
pub fn is_sys(topic: &str) -> bool {
    topic == "$SYS" || topic.starts_with("$SYS/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_space_names_its_device_literally() {
        for topic in [
            "/sys/pk/dn/thing/event/property/post",
            "/pk/dn/user/get",
            "/pk/dn/user/#",
            "/shadow/update/pk/dn",
            "/shadow/get/pk/dn",
            "/ext/ntp/pk/dn/request",
            "/ext/session/pk/dn/combine/batch_login",
            "/ota/device/inform/pk/dn",
            "/ota/device/upgrade/pk/dn",
            "/ota/device/progress/pk/dn",
            "/ext/rrpc/7/sys/pk/dn/thing/service/x",
            "/ext/rrpc/+/pk/dn/user/cmd",
        ] {
            assert_eq!(device_space(topic), Some(("pk", "dn")), "{topic}");
        }
        for topic in [
            "/sys/pk/dn",
            "/sys/+/dn/x",
            "/+/dn/user/x",
            "/pk/#",
            "/pk/dn/other/x",
            "/broadcast/pk/x",
            "/shadow/update/pk/dn/x",
            "/ext/ntp/pk/dn",
            "plain/topic",
            "#",
        ] {
            assert_eq!(device_space(topic), None, "{topic}");
        }
    }

    #[test]
    fn rrpc_topics_wrap_a_device_topic() {
        assert_eq!(
            rrpc_wrapped("/ext/rrpc/17/pk/dn/user/cmd"),
            Some(("17", "/pk/dn/user/cmd"))
        );
        assert_eq!(
            rrpc_wrapped("/ext/rrpc/+/sys/pk/dn/x"),
            Some(("+", "/sys/pk/dn/x"))
        );
        assert_eq!(rrpc_wrapped("/ext/rrpc/17"), None);
        assert_eq!(rrpc_wrapped("/pk/dn/user/cmd"), None);
    }

    #[test]
    fn filters_are_validated() {
        assert!(validate_filter("a/+/c").is_ok());
        assert!(validate_filter("#").is_ok());
        assert!(validate_filter("a/#").is_ok());
        assert_eq!(validate_filter("a/#/c"), Err(TopicError::MisplacedWildcard));
        assert_eq!(validate_filter("a/b+"), Err(TopicError::MisplacedWildcard));
        assert_eq!(validate_name("a/+"), Err(TopicError::WildcardInName));
        assert_eq!(validate_name(""), Err(TopicError::Empty));
        let shared = Filter::parse("$share/g1/a/+").unwrap();
        assert_eq!(shared.share_group.as_deref(), Some("g1"));
        assert_eq!(shared.filter, "a/+");
        assert_eq!(shared.raw(), "$share/g1/a/+");
        assert_eq!(Filter::parse("$share/g1"), Err(TopicError::BadShare));
    }

    #[test]
    fn matching_follows_the_spec() {
        assert!(matches("a/+/c", "a/b/c"));
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("+/+", "/x"));
        assert!(!matches("a/+", "a/b/c"));
        assert!(!matches("#", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS/x"));
    }

    #[test]
    fn tree_agrees_with_matches() {
        let filters = [
            "a/b/c", "a/+/c", "a/#", "#", "+/b/+", "/+", "$SYS/#", "+/+/+/+", "a/b",
        ];
        let topics = ["a/b/c", "a", "a/b", "/x", "$SYS/up", "x/b/y", "a/b/c/d", ""];
        let mut tree = TopicTree::default();
        for (i, f) in filters.iter().enumerate() {
            tree.insert(f, i, |v| *v == i);
        }
        for t in topics {
            let mut got = Vec::new();
            tree.for_each_match(t, |v| got.push(*v));
            got.sort();
            let want: Vec<usize> = (0..filters.len())
                .filter(|&i| matches(filters[i], t))
                .collect();
            assert_eq!(got, want, "topic {t:?}");
        }
        for (i, f) in filters.iter().enumerate() {
            assert_eq!(tree.remove(f, |v| *v == i), 1);
        }
        assert!(tree.is_empty());
    }
}
