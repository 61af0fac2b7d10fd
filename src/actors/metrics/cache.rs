//! Metric handles resolved once per label set, and the caps on client-chosen label values.

use crate::labels::{DeploymentLabels, KeyLabels};
use std::collections::HashSet;
use std::sync::Arc;

/// Longest label value taken from client input; longer values fold into `other`.
pub const MAX_LABEL_VALUE_CHARS: usize = 200;
/// Distinct values admitted per custom metadata label before new ones fold into `other`.
pub const CUSTOM_LABEL_MAX_VALUES: usize = 1000;
pub const OVERFLOW: &str = "other";

/// Admits label values up to a cap; later ones read as `other`.
pub(super) struct Bounded {
    pub(super) seen: HashSet<String>,
    pub(super) cap: usize,
}

impl Bounded {
    /// `v` itself when admitted (now or before), else `other`.
    pub(super) fn admit<'v>(&mut self, v: &'v str) -> &'v str {
        if v.is_empty() || self.seen.contains(v) {
            return v;
        }
        if v.chars().count() > MAX_LABEL_VALUE_CHARS || self.seen.len() >= self.cap {
            return OVERFLOW;
        }
        self.seen.insert(v.to_owned());
        v
    }
}

/// Metric handles of the success path cached per *source* of their labels: the caller's `KeyLabels`, the
/// deployment's `DeploymentLabels` (both shared `Arc`s, compared by address and held, so an address is never
/// reused while cached), the requested model, the admitted end user and custom values. Every label of the
/// cached families is a function of these, so a request's lookup hashes two addresses and a few short
/// strings and allocates nothing; label values are only resolved when a handle is made. Entries are kept
/// inline in one table (about 200 bytes per label set).
pub(super) struct SeriesCache<V> {
    pub(super) table: hashbrown::HashTable<(u64, Source, V)>,
    pub(super) max: usize,
}

pub(super) struct Source {
    pub(super) key: Arc<KeyLabels>,
    pub(super) dep: Arc<DeploymentLabels>,
    pub(super) model: Arc<str>,
    pub(super) end_user: Box<str>,
    pub(super) custom: Box<[String]>,
}

/// Entries kept before the cache starts over (a key edited many times leaves one entry per version).
pub(super) const SERIES_CACHE_MAX: usize = 200_000;

impl<V> Default for SeriesCache<V> {
    fn default() -> Self {
        SeriesCache {
            table: hashbrown::HashTable::new(),
            max: SERIES_CACHE_MAX,
        }
    }
}

impl<V> SeriesCache<V> {
    pub(super) fn clear(&mut self) {
        self.table = hashbrown::HashTable::new();
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    pub(super) fn get_or_insert_with(
        &mut self,
        key: &Arc<KeyLabels>,
        dep: &Arc<DeploymentLabels>,
        model: &Arc<str>,
        end_user: &str,
        custom: &[String],
        make: impl FnOnce() -> V,
    ) -> &mut V {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (Arc::as_ptr(key) as usize).hash(&mut h);
        (Arc::as_ptr(dep) as usize).hash(&mut h);
        model.hash(&mut h);
        end_user.hash(&mut h);
        custom.hash(&mut h);
        let hash = h.finish();
        let eq = |(hh, s, _): &(u64, Source, V)| {
            *hh == hash
                && Arc::ptr_eq(&s.key, key)
                && Arc::ptr_eq(&s.dep, dep)
                && *s.model == **model
                && *s.end_user == *end_user
                && *s.custom == *custom
        };
        if self.table.len() >= self.max && self.table.find(hash, eq).is_none() {
            self.clear();
        }
        let entry = self.table.entry(hash, eq, |e| e.0).or_insert_with(|| {
            let source = Source {
                key: key.clone(),
                dep: dep.clone(),
                model: model.clone(),
                end_user: end_user.into(),
                custom: custom.into(),
            };
            (hash, source, make())
        });
        &mut entry.into_mut().2
    }
}
