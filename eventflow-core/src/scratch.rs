//! Per-thread scratch buffers for the hot path: a command joins its stream key and serialises its
//! events in memory it reuses, and allocates only what it keeps.

use std::cell::RefCell;

/// A buffer that grew beyond this (a large event) is freed after use rather than kept.
const KEEP_CAPACITY: usize = 16 * 1024;

thread_local! {
    static TEXT: RefCell<String> = const { RefCell::new(String::new()) };
    static BYTES: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Calls `f` with `"{prefix}-{id}"`, joined in this thread's scratch string.
pub(crate) fn with_joined<R>(prefix: &str, id: &str, f: impl FnOnce(&str) -> R) -> R {
    let join = |text: &mut String| {
        text.clear();
        text.push_str(prefix);
        text.push('-');
        text.push_str(id);
    };
    TEXT.with(|cell| match cell.try_borrow_mut() {
        Ok(mut text) => {
            join(&mut text);
            let result = f(&text);
            if text.capacity() > KEEP_CAPACITY {
                *text = String::new();
            }
            result
        }
        // Only when `f` itself joins again: a buffer of its own.
        Err(_) => {
            let mut text = String::new();
            join(&mut text);
            f(&text)
        }
    })
}

/// Calls `f` with this thread's empty scratch byte buffer.
pub(crate) fn with_bytes<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    BYTES.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bytes) => {
            bytes.clear();
            let result = f(&mut bytes);
            if bytes.capacity() > KEEP_CAPACITY {
                *bytes = Vec::new();
            }
            result
        }
        // Only when `f` itself asks again (a `Serialize` that encodes an event): its own buffer.
        Err(_) => f(&mut Vec::new()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_and_reenters() {
        let outer = with_joined("order", "42", |outer| {
            let inner = with_joined("cart", "7", str::to_owned);
            format!("{outer} {inner}")
        });
        assert_eq!(outer, "order-42 cart-7");
        let long = "x".repeat(KEEP_CAPACITY + 1);
        assert_eq!(with_joined("a", &long, str::len), long.len() + 2);
        assert_eq!(with_joined("a", "b", str::to_owned), "a-b");
    }

    #[test]
    fn byte_buffers_start_empty_and_reenter() {
        with_bytes(|outer| {
            outer.extend_from_slice(b"outer");
            with_bytes(|inner| assert!(inner.is_empty()));
        });
        with_bytes(|again| assert!(again.is_empty()));
    }
}
