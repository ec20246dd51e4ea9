//! HDFS's path rules: absolute, `/`-separated, no empty, `.` or `..`
//! component, no `:` in a component, no NUL; at most 255 bytes a component
//! and 8,000 bytes a path. A trailing `/` is tolerated (`/a/` is `/a`), as
//! `hdfs dfs` does; `//` inside a path is not.

use crate::error::{Code, FsError, FsResult};

pub const MAX_COMPONENT: usize = 255;
pub const MAX_PATH: usize = 8000;

/// The path's components, root first excluded: `/a/b` → `["a", "b"]`.
pub fn components(path: &str) -> FsResult<Vec<&str>> {
    let bad = |why: &str| {
        Err(FsError::new(
            Code::InvalidPath,
            format!("invalid path {path:?}: {why}"),
        ))
    };
    if path.is_empty() {
        return bad("empty");
    }
    if !path.starts_with('/') {
        return bad("must be absolute (start with '/')");
    }
    if path.len() > MAX_PATH {
        return bad(&format!("longer than {MAX_PATH} bytes"));
    }
    if path.contains('\0') {
        return bad("contains a NUL character");
    }
    let body = path.strip_suffix('/').unwrap_or(path);
    if body.is_empty() {
        return Ok(vec![]);
    }
    let mut out = Vec::new();
    for c in body[1..].split('/') {
        match c {
            "" => return bad("empty component ('//')"),
            "." | ".." => return bad(&format!("contains the component {c:?}")),
            _ if c.contains(':') => return bad("a component contains ':'"),
            _ if c.len() > MAX_COMPONENT => {
                return bad(&format!("a component is longer than {MAX_COMPONENT} bytes"))
            }
            _ => out.push(c),
        }
    }
    Ok(out)
}

/// The canonical form: no trailing `/`.
pub fn normalize(path: &str) -> FsResult<String> {
    let comps = components(path)?;
    Ok(join(&comps))
}

pub fn join(comps: &[&str]) -> String {
    if comps.is_empty() {
        return "/".into();
    }
    let mut s = String::new();
    for c in comps {
        s.push('/');
        s.push_str(c);
    }
    s
}

/// `/a/b` → (`/a`, `b`); the root has no parent.
pub fn split_parent(path: &str) -> FsResult<(String, String)> {
    let comps = components(path)?;
    match comps.split_last() {
        None => Err(FsError::new(Code::InvalidPath, "the root has no parent")),
        Some((last, parents)) => Ok((join(parents), last.to_string())),
    }
}

/// Whether `inner` is `outer` or below it.
pub fn is_within(inner: &str, outer: &str) -> bool {
    outer == "/"
        || inner == outer
        || (inner.starts_with(outer) && inner.as_bytes().get(outer.len()) == Some(&b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_paths() {
        assert_eq!(components("/").unwrap(), Vec::<&str>::new());
        assert_eq!(components("/a/b").unwrap(), vec!["a", "b"]);
        assert_eq!(components("/a/b/").unwrap(), vec!["a", "b"]);
        assert_eq!(normalize("/a/").unwrap(), "/a");
        assert_eq!(
            components("/with space/ü").unwrap(),
            vec!["with space", "ü"]
        );
    }

    #[test]
    fn invalid_paths_are_rejected_with_a_reason() {
        for (p, why) in [
            ("", "empty"),
            ("a", "absolute"),
            ("a/b", "absolute"),
            ("//", "empty component"),
            ("/a//b", "empty component"),
            ("/a/./b", "\".\""),
            ("/a/../b", "\"..\""),
            ("/a\0b", "NUL"),
            ("/a:b", "':'"),
        ] {
            let e = components(p).unwrap_err();
            assert_eq!(e.code, Code::InvalidPath, "{p:?}");
            assert!(e.message.contains(why), "{p:?}: {}", e.message);
        }
        let long = format!("/{}", "x".repeat(MAX_COMPONENT + 1));
        assert!(components(&long).is_err());
    }

    #[test]
    fn parents_and_containment() {
        assert_eq!(split_parent("/a/b").unwrap(), ("/a".into(), "b".into()));
        assert_eq!(split_parent("/a").unwrap(), ("/".into(), "a".into()));
        assert!(split_parent("/").is_err());
        assert!(is_within("/a/b", "/a"));
        assert!(is_within("/a", "/a"));
        assert!(!is_within("/ab", "/a"));
        assert!(is_within("/x", "/"));
    }
}
