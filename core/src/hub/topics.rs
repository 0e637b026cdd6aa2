//! Custom topic categories of a product (Alibaba's "topic categories"): templates such as
//! `/${productKey}/${deviceName}/user/update` with the operation devices may perform. A product
//! without categories lets its devices use any topic of their `user` space; with categories,
//! only the listed ones, each for its operation.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::{Hub, HubError};
use crate::acl::Access;
use crate::data::topic_category::{Operation, TopicCategory};
use crate::limits::LimitId;
use crate::store::{self, records, transact};
use crate::topic;

/// The categories of each product that has some.
pub(crate) type Categories = RwLock<HashMap<String, Arc<Vec<TopicCategory>>>>;

const PREFIX: &str = "/${productKey}/${deviceName}/user/";

impl TopicCategory {
    /// The category's filter for one device.
    fn filter_for(&self, pk: &str, dn: &str) -> String {
        self.topic
            .replace("${productKey}", pk)
            .replace("${deviceName}", dn)
    }

    fn allows(&self, access: Access) -> bool {
        matches!(
            (self.operation, access),
            (Operation::All, _)
                | (Operation::Pub, Access::Publish)
                | (Operation::Sub, Access::Subscribe)
        )
    }
}

impl Hub {
    pub(crate) async fn load_topic_categories(&self) -> Result<(), HubError> {
        let all = transact(&**self.store(), |t| {
            Box::pin(async move { records::list_topic_categories(t).await })
        })
        .await?;
        let map = all.into_iter().map(|(pk, c)| (pk, Arc::new(c))).collect();
        *self.inner.categories.write().expect("categories lock") = map;
        Ok(())
    }

    /// Whether a device's access to a topic of its `user` space is allowed by its product's
    /// categories (always, when the product has none or the topic is elsewhere).
    pub(crate) fn category_allows(
        &self,
        pk: &str,
        dn: &str,
        access: Access,
        topic_or_filter: &str,
    ) -> bool {
        // Checked on every publish: no allocation, and most products have no categories.
        let categories = {
            let map = self.inner.categories.read().expect("categories lock");
            match map.get(pk) {
                Some(c) => c.clone(),
                None => return true,
            }
        };
        let in_user_space = crate::topic::after_device(topic_or_filter, "/", pk, dn)
            .is_some_and(|t| t.starts_with("/user/"));
        if !in_user_space {
            return true;
        }
        categories.iter().filter(|c| c.allows(access)).any(|c| {
            let filter = c.filter_for(pk, dn);
            match access {
                Access::Publish => topic::matches(&filter, topic_or_filter),
                // A subscription must be the category itself, or a topic inside it.
                Access::Subscribe => {
                    filter == topic_or_filter
                        || (!topic_or_filter.contains(['+', '#'])
                            && topic::matches(&filter, topic_or_filter))
                }
            }
        })
    }
}

impl Hub {
    /// Whether a device's publish on `topic` is to be parsed by its product's script: it is in a
    /// category marked `parse`.
    pub(crate) fn parses_topic(&self, pk: &str, dn: &str, topic: &str) -> bool {
        let categories = match self
            .inner
            .categories
            .read()
            .expect("categories lock")
            .get(pk)
        {
            Some(c) => c.clone(),
            None => return false,
        };
        categories
            .iter()
            .filter(|c| c.parse && c.allows(Access::Publish))
            .any(|c| topic::matches(&c.filter_for(pk, dn), topic))
    }
}

/// Products' topic categories.
#[derive(Clone, Copy)]
pub struct TopicCategories<'a> {
    hub: &'a Hub,
}

impl Hub {
    /// Products' topic categories.
    pub fn topics(&self) -> TopicCategories<'_> {
        TopicCategories { hub: self }
    }
}

impl TopicCategories<'_> {
    /// Replaces a product's topic categories (L-030); an empty list lifts the restriction.
    pub async fn put(
        &self,
        pk: &str,
        categories: Vec<TopicCategory>,
    ) -> Result<Vec<TopicCategory>, HubError> {
        let product = self.hub.registry().product(pk).await?;
        let max = self
            .hub
            .profile_of(&product.tenant)
            .entities
            .topic_categories;
        if max > 0 && categories.len() as u64 > max {
            return Err(self.hub.limited(
                LimitId::TopicCategories,
                format!("at most {max} topic categories per product"),
            ));
        }
        for c in &categories {
            let Some(rest) = c.topic.strip_prefix(PREFIX).filter(|r| !r.is_empty()) else {
                return Err(HubError::Invalid(format!(
                    "topic {} must start with {PREFIX}",
                    c.topic
                )));
            };
            topic::Filter::parse(&format!("/p/d/user/{rest}"))
                .map_err(|e| HubError::Invalid(format!("topic {}: {e}", c.topic)))?;
        }
        store::write(&**self.hub.store(), |t| {
            records::put_topic_categories(t, pk, &categories)
        })
        .await?;
        let mut map = self.hub.inner.categories.write().expect("categories lock");
        if categories.is_empty() {
            map.remove(pk);
        } else {
            map.insert(pk.to_owned(), Arc::new(categories.clone()));
        }
        Ok(categories)
    }

    /// A product's topic categories.
    pub async fn get(&self, pk: &str) -> Result<Vec<TopicCategory>, HubError> {
        self.hub.registry().product(pk).await?;
        let map = self.hub.inner.categories.read().expect("categories lock");
        Ok(map.get(pk).map(|c| (**c).clone()).unwrap_or_default())
    }
}
