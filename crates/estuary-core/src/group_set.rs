//! A set of group names kept as a sorted vector: a connection is in one
//! or two groups, and a vector of one name is one small allocation, where a
//! `BTreeSet` allocates a node for eleven (about 190 bytes per connection,
//! each time a connection's groups are recorded).

use crate::names::GroupName;

/// A set of group names: sorted, without duplicates.
#[derive(Debug, Default)]
pub(crate) struct GroupSet(Vec<GroupName>);

impl GroupSet {
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn contains(&self, group: &GroupName) -> bool {
        self.0.binary_search(group).is_ok()
    }

    /// Adds `group`; `true` if it was not in the set.
    pub(crate) fn insert(&mut self, group: GroupName) -> bool {
        match self.0.binary_search(&group) {
            Ok(_) => false,
            Err(at) => {
                // Exactly: joins are rare, and most sets hold one name.
                self.0.reserve_exact(1);
                self.0.insert(at, group);
                true
            }
        }
    }

    pub(crate) fn remove(&mut self, group: &GroupName) {
        if let Ok(at) = self.0.binary_search(group) {
            self.0.remove(at);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn iter(&self) -> std::slice::Iter<'_, GroupName> {
        self.0.iter()
    }
}

impl IntoIterator for GroupSet {
    type Item = GroupName;
    type IntoIter = std::vec::IntoIter<GroupName>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_set_is_sorted_and_holds_each_name_once() {
        let name = |s: &str| GroupName::new(s).unwrap();
        let mut set = GroupSet::default();
        assert!(set.insert(name("b")));
        assert!(set.insert(name("a")));
        assert!(!set.insert(name("b")), "already there");
        assert!(set.insert(name("c")));
        assert_eq!(set.len(), 3);
        assert!(set.contains(&name("a")));
        set.remove(&name("a"));
        set.remove(&name("x"));
        assert!(!set.contains(&name("a")));
        let left: Vec<String> = set.into_iter().map(|g| g.to_string()).collect();
        assert_eq!(left, ["b", "c"]);
    }
}
