//! ZooKeeper's access control: ACL entries, the identities a connection
//! holds, and the check every operation makes.
//!
//! Schemes: `world` (id `anyone`), `auth` (expands, when a node is created
//! or its ACL set, to the creator's authenticated identities), `digest`
//! (`user:base64(sha1(user:password))`, proven by an auth packet carrying
//! `user:password`), `ip` (`a.b.c.d` or `a.b.c.d/bits`, matched against the
//! client's address). An identity `super` passes every check.

use std::net::IpAddr;

use base64::Engine;
use sha1::{Digest, Sha1};

use crate::error::{Code, CoordError, Result};
use crate::types::{AclEntry, AuthId};

pub mod perm {
    pub const READ: u32 = 1;
    pub const WRITE: u32 = 2;
    pub const CREATE: u32 = 4;
    pub const DELETE: u32 = 8;
    pub const ADMIN: u32 = 16;
    pub const ALL: u32 = 31;
}

pub const SUPER: &str = "super";

/// world:anyone with every permission (ZooKeeper's OPEN_ACL_UNSAFE).
pub fn open() -> Vec<AclEntry> {
    vec![AclEntry {
        perms: perm::ALL,
        scheme: "world".into(),
        id: "anyone".into(),
    }]
}

/// `user:base64(sha1(user:password))` for `user:password`.
pub fn digest_of(user_password: &str) -> String {
    let user = user_password.split(':').next().unwrap_or("");
    let hash = Sha1::digest(user_password.as_bytes());
    format!(
        "{user}:{}",
        base64::engine::general_purpose::STANDARD.encode(hash)
    )
}

/// The identities an auth packet proves, or AuthFailed. `superuser` is the
/// operator's `super:HASH` digest (empty: none).
pub fn authenticate(scheme: &str, auth: &[u8], superuser: &str) -> Result<Vec<AuthId>> {
    let failed = |why: &str| {
        Err(CoordError::new(
            Code::AuthFailed,
            format!("auth scheme {scheme:?}: {why}"),
        ))
    };
    match scheme {
        "digest" => {
            let Ok(text) = std::str::from_utf8(auth) else {
                return failed("credentials are not UTF-8");
            };
            if !text.contains(':') {
                return failed("expected user:password");
            }
            let id = digest_of(text);
            let mut ids = vec![AuthId {
                scheme: "digest".into(),
                id: id.clone(),
            }];
            if !superuser.is_empty() && id == superuser {
                ids.push(AuthId {
                    scheme: SUPER.into(),
                    id: String::new(),
                });
            }
            Ok(ids)
        }
        "ip" | "world" | "auth" | "super" => failed("not an authentication scheme"),
        _ => failed("unknown scheme (supported: digest)"),
    }
}

/// The identity every connection from `ip` holds.
pub fn ip_id(ip: IpAddr) -> AuthId {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    AuthId {
        scheme: "ip".into(),
        id: ip.to_string(),
    }
}

fn parse_ip_spec(spec: &str) -> Option<(IpAddr, u32)> {
    let (addr, bits) = match spec.split_once('/') {
        Some((a, b)) => (a, Some(b.parse::<u32>().ok()?)),
        None => (spec, None),
    };
    let addr: IpAddr = addr.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let bits = bits.unwrap_or(max);
    (bits <= max).then_some((addr, bits))
}

fn ip_matches(spec: &str, client: &str) -> bool {
    let (Some((net, bits)), Ok(ip)) = (parse_ip_spec(spec), client.parse::<IpAddr>()) else {
        return false;
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(c)) => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(n) & mask == u32::from(c) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(c)) => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(n) & mask == u128::from(c) & mask
        }
        _ => false,
    }
}

/// Checks an ACL given to create or setACL and expands `auth` entries to
/// the caller's authenticated identities, as ZooKeeper's fixupACL does.
pub fn fixup(acl: &[AclEntry], auth: &[AuthId]) -> Result<Vec<AclEntry>> {
    let invalid = |why: String| Err(CoordError::new(Code::InvalidAcl, why));
    if acl.is_empty() {
        return invalid("the ACL is empty".into());
    }
    let mut out: Vec<AclEntry> = Vec::with_capacity(acl.len());
    let mut push = |e: AclEntry| {
        if !out.contains(&e) {
            out.push(e);
        }
    };
    for e in acl {
        match e.scheme.as_str() {
            "world" if e.id == "anyone" => push(e.clone()),
            "world" => return invalid(format!("world:{} (the world id is anyone)", e.id)),
            "auth" => {
                let mut any = false;
                for a in auth.iter().filter(|a| a.scheme == "digest") {
                    any = true;
                    push(AclEntry {
                        perms: e.perms,
                        scheme: a.scheme.clone(),
                        id: a.id.clone(),
                    });
                }
                if !any {
                    return invalid(
                        "an auth ACL needs an authenticated identity (addauth digest first)".into(),
                    );
                }
            }
            "digest" => {
                let parts: Vec<&str> = e.id.split(':').collect();
                if parts.len() != 2 || parts[0].is_empty() {
                    return invalid(format!("digest:{} (expected user:hash)", e.id));
                }
                push(e.clone());
            }
            "ip" => {
                if parse_ip_spec(&e.id).is_none() {
                    return invalid(format!("ip:{} (expected an address or address/bits)", e.id));
                }
                push(e.clone());
            }
            other => return invalid(format!("unknown ACL scheme {other:?}")),
        }
    }
    Ok(out)
}

/// Whether `auth` holds one of the permissions `perm` on a node with `acl`.
pub fn allows(acl: &[AclEntry], perm: u32, auth: &[AuthId]) -> bool {
    if acl.is_empty() || auth.iter().any(|a| a.scheme == SUPER) {
        return true;
    }
    acl.iter()
        .filter(|e| e.perms & perm != 0)
        .any(|e| match e.scheme.as_str() {
            "world" => e.id == "anyone",
            "digest" => auth.iter().any(|a| a.scheme == "digest" && a.id == e.id),
            "ip" => auth
                .iter()
                .any(|a| a.scheme == "ip" && ip_matches(&e.id, &a.id)),
            _ => false,
        })
}

/// `allows`, as the error ZooKeeper gives.
pub fn check(acl: &[AclEntry], perm: u32, auth: &[AuthId], path: &str) -> Result<()> {
    if allows(acl, perm, auth) {
        Ok(())
    } else {
        Err(CoordError::new(
            Code::NoAuth,
            format!("the ACL of {path} does not allow this"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(perms: u32, scheme: &str, id: &str) -> AclEntry {
        AclEntry {
            perms,
            scheme: scheme.into(),
            id: id.into(),
        }
    }

    fn id(scheme: &str, id: &str) -> AuthId {
        AuthId {
            scheme: scheme.into(),
            id: id.into(),
        }
    }

    #[test]
    fn digest_is_zookeepers() {
        // As ZooKeeper's DigestAuthenticationProvider.generateDigest gives it.
        assert_eq!(
            digest_of("super:test"),
            "super:D/InIHSb7yEEbrWz8b9l71RjZJU="
        );
    }

    #[test]
    fn checks_follow_the_schemes() {
        let me = digest_of("alice:pw");
        let acl = vec![
            entry(perm::READ, "world", "anyone"),
            entry(perm::ALL, "digest", &me),
        ];
        let anon = vec![id("ip", "127.0.0.1")];
        assert!(allows(&acl, perm::READ, &anon));
        assert!(!allows(&acl, perm::WRITE, &anon));
        let alice = vec![id("ip", "127.0.0.1"), id("digest", &me)];
        assert!(allows(&acl, perm::WRITE | perm::ADMIN, &alice));
        let sup = vec![id(SUPER, "")];
        assert!(allows(&[entry(0, "digest", "x:y")], perm::ADMIN, &sup));
        let net = vec![entry(perm::ALL, "ip", "10.1.0.0/16")];
        assert!(allows(&net, perm::READ, &[id("ip", "10.1.2.3")]));
        assert!(!allows(&net, perm::READ, &[id("ip", "10.2.2.3")]));
        assert!(allows(
            &[entry(perm::ALL, "ip", "127.0.0.1")],
            perm::READ,
            &anon
        ));
    }

    #[test]
    fn fixup_expands_auth_and_refuses_bad_entries() {
        let me = digest_of("bob:pw");
        let auth = vec![id("ip", "127.0.0.1"), id("digest", &me)];
        let got = fixup(&[entry(perm::ALL, "auth", "")], &auth).unwrap();
        assert_eq!(got, vec![entry(perm::ALL, "digest", &me)]);
        for bad in [
            vec![],
            vec![entry(1, "world", "someone")],
            vec![entry(1, "digest", "nocolon")],
            vec![entry(1, "ip", "300.1.1.1")],
            vec![entry(1, "kerberos", "x")],
        ] {
            assert_eq!(
                fixup(&bad, &auth).unwrap_err().code,
                Code::InvalidAcl,
                "{bad:?}"
            );
        }
        let anon = vec![id("ip", "127.0.0.1")];
        assert_eq!(
            fixup(&[entry(1, "auth", "")], &anon).unwrap_err().code,
            Code::InvalidAcl
        );
    }

    #[test]
    fn authentication() {
        let ids = authenticate(
            "digest",
            b"super:test",
            "super:D/InIHSb7yEEbrWz8b9l71RjZJU=",
        )
        .unwrap();
        assert!(ids.iter().any(|a| a.scheme == SUPER));
        let ids = authenticate("digest", b"u:p", "").unwrap();
        assert_eq!(ids, vec![id("digest", &digest_of("u:p"))]);
        assert_eq!(
            authenticate("digest", b"nopass", "").unwrap_err().code,
            Code::AuthFailed
        );
        assert_eq!(
            authenticate("sasl", b"x", "").unwrap_err().code,
            Code::AuthFailed
        );
    }
}
