//! A product's custom topic categories (Alibaba's "topic categories"): topic templates under the
//! device's `user` space with the operation devices may perform there.

use serde::{Deserialize, Serialize};

/// What devices may do on a category.
#[derive(schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// Publish only.
    Pub,
    /// Subscribe only.
    Sub,
    /// Both.
    All,
}

/// A topic category.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicCategory {
    /// `/${productKey}/${deviceName}/user/...`, `+` and `#` allowed after `user/`.
    pub topic: String,
    /// pub, sub or all.
    pub operation: Operation,
    /// For people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Whether devices' messages on it are parsed by the product's script (`transformPayload`)
    /// before rules and consumer groups see them (Alibaba's "data parsing" flag of a topic).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub parse: bool,
}
