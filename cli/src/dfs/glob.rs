//! Paths as `hdfs dfs` takes them: relative to the home directory,
//! `hdfs://host:port/path` URIs, and glob patterns (`*`, `?`, `[abc]`,
//! `[^abc]`, `{a,b}`, `\` to escape) expanded one path component at a
//! time against the namenode's listings, as HDFS's globber does.

use globset::{Glob, GlobBuilder, GlobMatcher};
use hstack_dfs::client::DfsClient;
use hstack_dfs::{Code, FsError};

/// A path argument, split: the namenode it names (`None` for a plain path
/// or `hdfs:///path`) and the path, which may be relative.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathArg {
    pub authority: Option<String>,
    pub path: String,
}

/// HDFS's namenode port when a URI names none.
pub const DEFAULT_PORT: u16 = 8020;

/// Splits a path argument: `hdfs://host:port/p`, `hdfs:///p`, `hdfs:/p` or
/// a plain path. Another scheme is refused.
pub fn parse_arg(arg: &str) -> anyhow::Result<PathArg> {
    if arg.is_empty() {
        anyhow::bail!("an empty path names nothing");
    }
    if let Some(rest) = arg.strip_prefix("hdfs://") {
        let (auth, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        return Ok(PathArg {
            authority: (!auth.is_empty()).then(|| with_port(auth)),
            path: path.to_string(),
        });
    }
    if let Some(rest) = arg.strip_prefix("hdfs:") {
        if rest.starts_with('/') {
            return Ok(PathArg {
                authority: None,
                path: rest.to_string(),
            });
        }
    }
    if let Some((scheme, _)) = arg.split_once("://") {
        if !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+')
        {
            anyhow::bail!("{arg}: {scheme}:// is not this file system (only hdfs:// URIs are)");
        }
    }
    Ok(PathArg {
        authority: None,
        path: arg.to_string(),
    })
}

/// `host` → `host:8020`; `host:port` and `[v6]:port` stay.
fn with_port(auth: &str) -> String {
    let has_port = match auth.rfind(':') {
        Some(i) => {
            !auth[..i].ends_with(':')
                && !auth.ends_with(']')
                && auth[i + 1..].parse::<u16>().is_ok()
        }
        None => false,
    };
    if has_port {
        auth.to_string()
    } else {
        format!("{auth}:{DEFAULT_PORT}")
    }
}

/// An absolute, normalized path: relative to `home`, `.` and `..` taken
/// away, no trailing `/`.
pub fn absolute(path: &str, home: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{home}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for c in joined.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Whether a path component holds an unescaped glob character.
pub fn is_glob(component: &str) -> bool {
    let mut escaped = false;
    for ch in component.chars() {
        if escaped {
            escaped = false;
        } else if ch == '\\' {
            escaped = true;
        } else if matches!(ch, '*' | '?' | '[' | '{') {
            return true;
        }
    }
    false
}

/// A literal component with its escapes taken away (`a\*b` → `a*b`).
pub fn unescape(component: &str) -> String {
    let mut out = String::with_capacity(component.len());
    let mut escaped = false;
    for ch in component.chars() {
        if escaped || ch != '\\' {
            out.push(ch);
            escaped = false;
        } else {
            escaped = true;
        }
    }
    out
}

/// Whether any component of an absolute path is a glob.
pub fn has_glob(path: &str) -> bool {
    path.split('/').any(is_glob)
}

/// The matcher of one path component (`case_insensitive` for `find -iname`).
pub fn matcher(pattern: &str, case_insensitive: bool) -> anyhow::Result<GlobMatcher> {
    let g: Glob = GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .empty_alternates(true)
        .case_insensitive(case_insensitive)
        .build()
        .map_err(|e| anyhow::anyhow!("bad glob pattern `{pattern}': {}", e.kind()))?;
    Ok(g.compile_matcher())
}

/// Expands the alternations that span components (`{a/b,c}`) into whole
/// patterns, as HDFS's GlobExpander does; alternations inside one
/// component are left to the matcher.
pub fn expand_slash_braces(pattern: &str) -> Vec<String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '{' => {
                // Find the matching brace and the top-level commas.
                let mut depth = 0;
                let mut j = i;
                let mut commas = Vec::new();
                let mut slash = false;
                let mut close = None;
                while j < chars.len() {
                    match chars[j] {
                        '\\' => j += 1,
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                close = Some(j);
                                break;
                            }
                        }
                        ',' if depth == 1 => commas.push(j),
                        '/' => slash = true,
                        _ => {}
                    }
                    j += 1;
                }
                let Some(close) = close else {
                    // Unclosed: the matcher says so.
                    return vec![pattern.to_string()];
                };
                if !slash {
                    i = close + 1;
                    continue;
                }
                let prefix: String = chars[..i].iter().collect();
                let suffix: String = chars[close + 1..].iter().collect();
                let mut bounds = vec![i];
                bounds.extend(&commas);
                bounds.push(close);
                let mut out = Vec::new();
                for w in bounds.windows(2) {
                    let alt: String = chars[w[0] + 1..w[1]].iter().collect();
                    out.extend(expand_slash_braces(&format!("{prefix}{alt}{suffix}")));
                }
                return out;
            }
            _ => i += 1,
        }
    }
    vec![pattern.to_string()]
}

/// Checks every glob component of an absolute path pattern, without
/// asking the namenode anything.
pub fn check(pattern: &str) -> anyhow::Result<()> {
    for p in expand_slash_braces(pattern) {
        for c in p.split('/').filter(|c| is_glob(c)) {
            if let Err(e) = matcher(c, false) {
                anyhow::bail!("{e} in `{pattern}' (nothing was done)");
            }
        }
    }
    Ok(())
}

/// `` `PATTERN': No such file or directory `` (HDFS's words), as the
/// file system's own not-found error.
pub fn no_match(arg: &str) -> FsError {
    FsError::new(
        Code::FileNotFound,
        format!("`{arg}': No such file or directory"),
    )
}

/// The paths an absolute pattern matches, sorted; a pattern without glob
/// characters is its own (unescaped) path, unchecked.
pub async fn expand(c: &DfsClient, pattern: &str) -> anyhow::Result<Vec<String>> {
    if !has_glob(pattern) {
        return Ok(vec![literal(pattern)]);
    }
    let mut all = Vec::new();
    for p in expand_slash_braces(pattern) {
        for m in expand_one(c, &p).await? {
            if !all.contains(&m) {
                all.push(m);
            }
        }
    }
    all.sort();
    Ok(all)
}

fn literal(path: &str) -> String {
    let parts: Vec<String> = path
        .split('/')
        .filter(|c| !c.is_empty())
        .map(unescape)
        .collect();
    format!("/{}", parts.join("/"))
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

async fn expand_one(c: &DfsClient, pattern: &str) -> anyhow::Result<Vec<String>> {
    // Each candidate, and whether it is known to exist.
    let mut cands: Vec<(String, bool)> = vec![("/".to_string(), true)];
    for comp in pattern.split('/').filter(|c| !c.is_empty()) {
        let mut next = Vec::new();
        if is_glob(comp) {
            let m = matcher(comp, false)?;
            for (dir, _) in &cands {
                let entries = match c.list(dir).await {
                    Ok(e) => e,
                    Err(e) if matches!(e.code, Code::FileNotFound | Code::NotDirectory) => continue,
                    Err(e) => return Err(e.into()),
                };
                for e in entries {
                    let name = e.path.rsplit('/').next().unwrap_or_default();
                    // A file lists as itself: it has no children to match.
                    if e.path == *dir {
                        continue;
                    }
                    if m.is_match(name) {
                        next.push((e.path.clone(), true));
                    }
                }
            }
        } else {
            let name = unescape(comp);
            next.extend(cands.iter().map(|(d, _)| (join(d, &name), false)));
        }
        cands = next;
        if cands.is_empty() {
            break;
        }
    }
    let mut out = Vec::new();
    for (p, known) in cands {
        if known || c.stat(&p).await?.is_some() {
            out.push(p);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_split_into_namenode_and_path() {
        let a = parse_arg("hdfs://nn:9000/a/b").unwrap();
        assert_eq!(a.authority.as_deref(), Some("nn:9000"));
        assert_eq!(a.path, "/a/b");
        let a = parse_arg("hdfs://nn").unwrap();
        assert_eq!(a.authority.as_deref(), Some("nn:8020"));
        assert_eq!(a.path, "/");
        assert_eq!(parse_arg("hdfs:///x").unwrap().authority, None);
        assert_eq!(parse_arg("hdfs:/x").unwrap().path, "/x");
        assert_eq!(parse_arg("rel/x").unwrap().path, "rel/x");
        assert!(parse_arg("s3a://bucket/x").is_err());
        assert!(parse_arg("").is_err());
        assert_eq!(
            parse_arg("hdfs://[::1]:9000/x")
                .unwrap()
                .authority
                .as_deref(),
            Some("[::1]:9000")
        );
        assert_eq!(
            parse_arg("hdfs://[::1]/x").unwrap().authority.as_deref(),
            Some("[::1]:8020")
        );
    }

    #[test]
    fn relative_paths_resolve_against_home() {
        assert_eq!(absolute("a/b", "/user/me"), "/user/me/a/b");
        assert_eq!(absolute(".", "/user/me"), "/user/me");
        assert_eq!(absolute("../you/", "/user/me"), "/user/you");
        assert_eq!(absolute("/x/./y/../z", "/user/me"), "/x/z");
        assert_eq!(absolute("/..", "/user/me"), "/");
    }

    #[test]
    fn globs_are_told_apart_and_checked() {
        assert!(is_glob("*.txt") && is_glob("a?") && is_glob("[ab]") && is_glob("{a,b}"));
        assert!(!is_glob("a\\*b") && !is_glob("plain"));
        assert_eq!(unescape("a\\*b"), "a*b");
        assert!(check("/a/[bc/d").is_err());
        assert!(check("/a/{b,c").is_err());
        assert!(check("/a/[bc]/{d,e}*").is_ok());
        let m = matcher("[^a]x{1,2}", false).unwrap();
        assert!(m.is_match("bx1") && !m.is_match("ax1") && !m.is_match("bx3"));
        assert!(matcher("*.TXT", true).unwrap().is_match("a.txt"));
    }

    #[test]
    fn alternations_across_components_expand_first() {
        assert_eq!(expand_slash_braces("/a/{b,c}"), ["/a/{b,c}"]);
        assert_eq!(expand_slash_braces("/{a/b,c}/d"), ["/a/b/d", "/c/d"]);
        assert_eq!(
            expand_slash_braces("/{x,y/z}/{p,q/r}"),
            ["/x/p", "/x/q/r", "/y/z/p", "/y/z/q/r"]
        );
    }
}
