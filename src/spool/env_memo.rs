//! The environment as one recording call has read it: each variable read once per
//! call, not once per question (one `track` asks the same few about a dozen times,
//! and each read scans the whole environment). Per thread, and only inside an
//! [`EnvScope`], so a variable changed between two calls is seen by the second.

use std::cell::RefCell;
use std::marker::PhantomData;

/// What the scope on this thread has read: for whom (an `Inner`'s address; 0: no
/// scope), and each name with its value. The buffers are kept between scopes, so a
/// warm `track` allocates here only to copy the value of a variable that is set.
struct Memo {
    owner: usize,
    names: String,
    seen: Vec<(usize, usize, Option<String>)>,
}

thread_local! {
    static MEMO: RefCell<Memo> = const {
        RefCell::new(Memo {
            owner: 0,
            names: String::new(),
            seen: Vec::new(),
        })
    };
}

/// While alive, [`recall`] and [`remember`] work for its owner on this thread. It
/// borrows the owner, so it cannot outlive it (and the address stays the owner's),
/// and is not `Send`, so it ends on the thread whose memo it opened.
pub(crate) struct EnvScope<'a> {
    /// False for a scope inside another (which stays in charge) or when the
    /// thread's memo is unusable (being torn down): then it does nothing.
    active: bool,
    _owner: PhantomData<(&'a (), *const ())>,
}

impl<'a> EnvScope<'a> {
    /// Opens the memo on this thread for `owner` (the address of what `_of`
    /// borrows), unless a scope is already open here.
    pub(super) fn enter<T>(owner: usize, _of: &'a T) -> EnvScope<'a> {
        let active = MEMO
            .try_with(|m| match m.try_borrow_mut() {
                Ok(mut m) if m.owner == 0 => {
                    m.owner = owner;
                    m.names.clear();
                    m.seen.clear();
                    true
                }
                _ => false,
            })
            .unwrap_or(false);
        EnvScope {
            active,
            _owner: PhantomData,
        }
    }
}

impl Drop for EnvScope<'_> {
    fn drop(&mut self) {
        if !self.active {
            return;
        }
        let _ = MEMO.try_with(|m| {
            if let Ok(mut m) = m.try_borrow_mut() {
                m.owner = 0;
                m.seen.clear();
            }
        });
    }
}

/// The value `owner`'s scope read for `name`, if it has read it (`Some(None)`: read,
/// and unset).
pub(super) fn recall(owner: usize, name: &str) -> Option<Option<String>> {
    MEMO.try_with(|m| {
        let m = m.try_borrow().ok()?;
        if m.owner != owner {
            return None;
        }
        m.seen
            .iter()
            .find(|(start, len, _)| m.names.get(*start..*start + *len) == Some(name))
            .map(|(_, _, v)| v.clone())
    })
    .ok()
    .flatten()
}

/// Keeps what `owner` read for `name`, if a scope of its is open on this thread.
pub(super) fn remember(owner: usize, name: &str, value: &Option<String>) {
    let _ = MEMO.try_with(|m| {
        if let Ok(mut m) = m.try_borrow_mut() {
            if m.owner == owner {
                let start = m.names.len();
                m.names.push_str(name);
                m.seen.push((start, name.len(), value.clone()));
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_remembers_for_its_owner_only_and_forgets_when_it_ends() {
        assert_eq!(recall(1, "A"), None, "no scope: nothing remembered");
        {
            let _outer = EnvScope::enter(1, &());
            remember(1, "A", &Some("x".into()));
            remember(1, "B", &None);
            remember(2, "C", &Some("y".into()));
            assert_eq!(recall(1, "A"), Some(Some("x".into())));
            assert_eq!(recall(1, "B"), Some(None));
            assert_eq!(recall(1, "C"), None);
            assert_eq!(recall(2, "C"), None, "another owner is not remembered");
            {
                let _inner = EnvScope::enter(2, &());
                assert_eq!(recall(1, "A"), Some(Some("x".into())), "the outer stays");
            }
            assert_eq!(recall(1, "A"), Some(Some("x".into())));
        }
        assert_eq!(recall(1, "A"), None, "forgotten when the scope ends");
    }
}
