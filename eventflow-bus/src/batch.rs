//! Cutting a publish into service calls: every cloud API takes a bounded number of entries and
//! bytes per call (EventBridge `PutEvents`: 10 and 256 KiB; SQS `SendMessageBatch`: 10 and
//! 256 KiB; Pub/Sub `Publish`: 1,000 and 10 MB).

/// Groups `(size, item)` into batches of at most `max_entries` items whose sizes add up to at
/// most `max_bytes`, in order. An item larger than `max_bytes` goes alone in its batch (the
/// caller checks single items against the service's limit first).
pub(crate) fn batch_by_size<T>(
    items: impl IntoIterator<Item = (usize, T)>,
    max_entries: usize,
    max_bytes: usize,
) -> Vec<Vec<T>> {
    let mut batches: Vec<Vec<T>> = Vec::new();
    let mut bytes = 0;
    for (size, item) in items {
        let fits = batches
            .last()
            .is_some_and(|b| b.len() < max_entries && bytes + size <= max_bytes);
        if !fits {
            batches.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        if let Some(batch) = batches.last_mut() {
            batch.push(item);
        }
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lengths<T>(batches: &[Vec<T>]) -> Vec<usize> {
        batches.iter().map(Vec::len).collect()
    }

    #[test]
    fn batches_respect_the_entry_count() {
        let batches = batch_by_size((0..23).map(|i| (10, i)), 10, 256 * 1024);
        assert_eq!(lengths(&batches), [10, 10, 3]);
        assert_eq!(
            batches.concat(),
            (0..23).collect::<Vec<_>>(),
            "order is kept"
        );
    }

    #[test]
    fn batches_respect_the_byte_size() {
        let big = 100 * 1024;
        let batches = batch_by_size((0..5).map(|i| (big, i)), 10, 256 * 1024);
        assert_eq!(lengths(&batches), [2, 2, 1]);
        let oversized = batch_by_size([(300 * 1024, 'a'), (1, 'b')], 10, 256 * 1024);
        assert_eq!(lengths(&oversized), [1, 1], "an oversized item goes alone");
        assert!(batch_by_size(Vec::<(usize, u8)>::new(), 10, 10).is_empty());
    }
}
