//! ZooKeeper's path rules: absolute, `/`-separated, no empty, `.` or `..`
//! component, no trailing `/` (except the root), no NUL or control characters.

use crate::error::{Code, CoordError};

pub const ROOT: &str = "/";

pub fn validate(path: &str) -> Result<(), CoordError> {
    let bad = |why: &str| {
        Err(CoordError::new(
            Code::InvalidArgument,
            format!("invalid path {path:?}: {why}"),
        ))
    };
    if path.is_empty() {
        return bad("empty");
    }
    if !path.starts_with('/') {
        return bad("must start with '/'");
    }
    if path == ROOT {
        return Ok(());
    }
    if path.ends_with('/') {
        return bad("must not end with '/'");
    }
    for c in path.chars() {
        let code = c as u32;
        if c == '\0' {
            return bad("contains a NUL character");
        }
        if (0x01..=0x1f).contains(&code)
            || (0x7f..=0x9f).contains(&code)
            || (0xd800..=0xf8ff).contains(&code)
            || (0xfff0..=0xffff).contains(&code)
        {
            return bad(&format!("contains the invalid character U+{code:04X}"));
        }
    }
    for comp in path[1..].split('/') {
        match comp {
            "" => return bad("empty component ('//')"),
            "." | ".." => return bad("relative component ('.' or '..')"),
            _ => {}
        }
    }
    Ok(())
}

/// Validates the path a sequential create will produce (the client may end
/// the prefix with '/', as ZooKeeper allows).
pub fn validate_create(path: &str, sequential: bool) -> Result<(), CoordError> {
    if sequential {
        validate(&format!("{path}0000000000"))
    } else {
        validate(path)
    }
}

/// Parent of a valid non-root path.
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) => ROOT,
        Some(i) => &path[..i],
        None => ROOT,
    }
}

/// Last component of a valid non-root path.
pub fn name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or("")
}

/// `path` itself and each of its ancestors up to the root.
pub fn self_and_ancestors(path: &str) -> impl Iterator<Item = &str> {
    let mut next = Some(path);
    std::iter::from_fn(move || {
        let cur = next?;
        next = if cur == ROOT { None } else { Some(parent(cur)) };
        Some(cur)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_paths() {
        for p in [
            "/",
            "/a",
            "/a/b",
            "/a-b_c.d",
            "/zookeeper/quota",
            "/é",
            "/a..b",
            "/.a",
        ] {
            assert!(validate(p).is_ok(), "{p}");
        }
    }

    #[test]
    fn rejects_invalid_paths_with_reason() {
        for (p, why) in [
            ("", "empty"),
            ("a", "start with"),
            ("/a/", "end with"),
            ("//", "end with"),
            ("//a", "empty component"),
            ("/a//b", "empty component"),
            ("/a/./b", "relative"),
            ("/a/../b", "relative"),
            ("/..", "relative"),
            ("/a\0b", "NUL"),
            ("/a\u{1}", "invalid character"),
            ("/a\u{fff5}", "invalid character"),
        ] {
            let err = validate(p).unwrap_err();
            assert_eq!(err.code, Code::InvalidArgument);
            assert!(err.message.contains(why), "{p:?}: {}", err.message);
        }
    }

    #[test]
    fn sequential_prefix_may_end_with_slash() {
        assert!(validate_create("/a/", true).is_ok());
        assert!(validate_create("/a/", false).is_err());
        assert!(validate_create("/a//", true).is_err());
    }

    #[test]
    fn parent_name_join() {
        assert_eq!(parent("/a"), "/");
        assert_eq!(parent("/a/b/c"), "/a/b");
        assert_eq!(name("/a/b/c"), "c");
        let v: Vec<_> = self_and_ancestors("/a/b").collect();
        assert_eq!(v, ["/a/b", "/a", "/"]);
    }
}
