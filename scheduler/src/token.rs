//! Container tokens: the resource manager signs, for each container it
//! places, which node may start it, with what resources, for whom and
//! until when (HMAC-SHA256 with a key the resource manager makes at start
//! and gives node managers when they register). A node manager starts
//! nothing without a valid token: no one can launch on a node what the
//! scheduler did not place there. YARN's container tokens do the same,
//! even in its non-secure mode.

use hmac::{KeyInit, Mac};
use hstack_proto::scheduler as pb;
use hstack_proto::{Code, Error};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// A fresh random key.
pub fn new_key() -> Vec<u8> {
    use rand::RngCore;
    let mut k = vec![0u8; 32];
    rand::thread_rng().fill_bytes(&mut k);
    k
}

fn mac_over(key: &[u8], t: &pb::ContainerToken) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    let r = t.resource.unwrap_or_default();
    // Length-prefixed fields: no two tokens sign the same bytes.
    for part in [
        t.container_id.as_bytes(),
        t.node_id.as_bytes(),
        t.user.as_bytes(),
        &r.memory_mb.to_be_bytes(),
        &r.vcores.to_be_bytes(),
        &t.expires_ms.to_be_bytes(),
    ] {
        m.update(&(part.len() as u32).to_be_bytes());
        m.update(part);
    }
    m
}

fn mac_of(key: &[u8], t: &pb::ContainerToken) -> Vec<u8> {
    mac_over(key, t).finalize().into_bytes().to_vec()
}

/// Compared in constant time (the MAC's own check).
fn mac_matches(key: &[u8], t: &pb::ContainerToken) -> bool {
    mac_over(key, t).verify_slice(&t.mac).is_ok()
}

/// Signs `t` (its `mac` is replaced).
pub fn sign(key: &[u8], mut t: pb::ContainerToken) -> pb::ContainerToken {
    t.mac = mac_of(key, &t);
    t
}

/// Checks `t` is the resource manager's, for this node, and unexpired.
pub fn verify(key: &[u8], t: &pb::ContainerToken, node_id: &str, now_ms: u64) -> Result<(), Error> {
    let bad = |why: String| Error::new(Code::InvalidContainerToken, why);
    if key.is_empty() {
        return Err(bad(
            "this node manager has not registered with a resource manager yet".into(),
        ));
    }
    if !mac_matches(key, t) {
        return Err(bad(format!(
            "the token of {} is not the resource manager's",
            t.container_id
        )));
    }
    if t.node_id != node_id {
        return Err(bad(format!(
            "{} was placed on {}, not on this node ({node_id})",
            t.container_id, t.node_id
        )));
    }
    if t.expires_ms < now_ms {
        return Err(bad(format!(
            "the token of {} expired {} ms ago",
            t.container_id,
            now_ms - t.expires_ms
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> pb::ContainerToken {
        pb::ContainerToken {
            container_id: "container_1_0001_01_000002".into(),
            node_id: "h1:8041".into(),
            resource: Some(pb::Resource {
                memory_mb: 1024,
                vcores: 1,
            }),
            user: "alice".into(),
            expires_ms: 1000,
            mac: vec![],
        }
    }

    #[test]
    fn only_a_signed_unexpired_token_for_this_node_passes() {
        let key = new_key();
        let t = sign(&key, token());
        verify(&key, &t, "h1:8041", 999).unwrap();
        let code = |r: Result<(), Error>| r.unwrap_err().code;
        assert_eq!(
            code(verify(&key, &t, "h2:8041", 999)),
            Code::InvalidContainerToken
        );
        assert_eq!(
            code(verify(&key, &t, "h1:8041", 1001)),
            Code::InvalidContainerToken
        );
        assert_eq!(
            code(verify(&new_key(), &t, "h1:8041", 0)),
            Code::InvalidContainerToken
        );
        // Any field changed after signing: refused.
        let mut more = t.clone();
        more.resource = Some(pb::Resource {
            memory_mb: 8192,
            vcores: 1,
        });
        assert_eq!(
            code(verify(&key, &more, "h1:8041", 0)),
            Code::InvalidContainerToken
        );
        let mut other = t.clone();
        other.user = "mallory".into();
        assert_eq!(
            code(verify(&key, &other, "h1:8041", 0)),
            Code::InvalidContainerToken
        );
        assert_eq!(
            code(verify(&[], &t, "h1:8041", 0)),
            Code::InvalidContainerToken
        );
    }
}
