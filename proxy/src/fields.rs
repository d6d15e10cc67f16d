//! The list both HTTP/1 head parsers (`h1.rs` for requests, `upstream/wire.rs` for responses)
//! fill while they read a head: each field's name and where its value lies in the head. The
//! values can only be sliced out once the whole head is split off the read buffer, so the
//! list is kept until then. It is the same memory on every request: each proxy thread keeps
//! one list and lends it out (parsing never awaits, so no two heads on a thread share it).

use std::cell::Cell;

use http::HeaderName;

/// A field's name and its value's start and end in the head.
pub type Field = (HeaderName, usize, usize);

/// A list kept longer than this is let go (a head of many fields), so that a rare large head
/// does not hold memory for good.
const KEPT_MAX: usize = 128;

thread_local! {
    static KEPT: Cell<Vec<Field>> = const { Cell::new(Vec::new()) };
}

/// This thread's list, empty (`give_back` empties it), with room for `n` fields.
pub fn lend(n: usize) -> Vec<Field> {
    let mut v = KEPT.take();
    v.reserve(n);
    v
}

/// Gives the list back for the next head (a list dropped instead, as on an error, just costs
/// the next head an allocation).
pub fn give_back(mut v: Vec<Field>) {
    if v.capacity() <= KEPT_MAX {
        v.clear();
        KEPT.set(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_lent_empty_and_its_memory_comes_back() {
        let mut v = lend(4);
        v.push((http::header::HOST, 0, 1));
        let cap = v.capacity();
        let ptr = v.as_ptr();
        give_back(v);
        let again = lend(2);
        assert!(again.is_empty());
        assert_eq!((again.capacity(), again.as_ptr()), (cap, ptr));
        give_back(again);
        // Too large to keep: let go, and the next loan starts afresh.
        give_back(Vec::with_capacity(KEPT_MAX + 1));
        assert_eq!(lend(0).capacity(), cap);
    }
}
