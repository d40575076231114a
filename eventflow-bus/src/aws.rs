//! Resource naming for the AWS adapters (their SDK errors are classified by `eventflow-aws`).

/// A resource name from `parts`: characters outside `[A-Za-z0-9_-]` (plus `.` where `dots`)
/// become `-`; a name longer than `max` is cut and ends with a hash of the whole, so distinct
/// long names stay distinct and the mapping is stable across releases.
pub(crate) fn resource_name(parts: &[&str], max: usize, dots: bool) -> String {
    let full: String = parts.concat();
    let clean: String = full
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || (dots && c == '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if clean.len() <= max {
        return clean;
    }
    let hash = format!("{:016x}", fnv1a(full.as_bytes()));
    let keep = max.saturating_sub(hash.len() + 1);
    format!("{}-{hash}", &clean[..keep])
}

/// 64-bit FNV-1a: stable, unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_kept_and_cleaned() {
        assert_eq!(resource_name(&["app-", "orders"], 80, false), "app-orders");
        assert_eq!(resource_name(&["a.b c"], 80, false), "a-b-c");
        assert_eq!(resource_name(&["a.b c"], 64, true), "a.b-c");
    }

    #[test]
    fn long_names_are_cut_with_a_stable_hash() {
        let long = "x".repeat(100);
        let a = resource_name(&[&long, "-1"], 64, true);
        let b = resource_name(&[&long, "-2"], 64, true);
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_eq!(a, resource_name(&[&long, "-1"], 64, true));
    }
}
