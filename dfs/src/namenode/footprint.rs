//! What the namenode's memory holds per file and block, measured the way
//! HDFS's rule of thumb (about 150 bytes per object) is stated: build the
//! namespace and the block map for N one-block files with three replicas
//! each, exactly as the namenode would (the same edits, the same reports),
//! and divide the growth of the process's resident memory by the objects
//! (inodes + blocks).

use std::time::Instant;

use serde::Serialize;

use super::expected;
use crate::blockmap::BlockMap;
use crate::error::{FsError, FsResult};
use crate::namespace::{BlockRec, Edit, Namespace};

#[derive(Debug, Serialize)]
pub struct Footprint {
    pub files: u64,
    pub blocks: u64,
    /// Inodes (files and directories) + blocks.
    pub objects: u64,
    pub bytes: u64,
    pub bytes_per_object: f64,
    pub build_seconds: f64,
    /// Turning the namespace into an image file (sort, serialize, CRC,
    /// fsync), as a checkpoint does off the namenode's lock.
    pub image_write_seconds: f64,
    pub image_bytes: u64,
}

fn resident_bytes() -> FsResult<u64> {
    let s = std::fs::read_to_string("/proc/self/statm")
        .map_err(|e| crate::error::io("/proc/self/statm", e))?;
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| FsError::invalid("unexpected /proc/self/statm"))?;
    Ok(pages * 4096)
}

pub fn memory_footprint(files: u64) -> FsResult<Footprint> {
    let before = resident_bytes()?;
    let started = Instant::now();
    let mut ns = Namespace::new("hdfs", "supergroup");
    let mut bm = BlockMap::default();
    let now = Instant::now();
    for i in 0..6 {
        let id = format!("dn{i}");
        bm.register(
            &id,
            &format!("10.0.0.{i}"),
            "t",
            "r",
            "h",
            &format!("/rack{}", i % 2),
            now,
        );
    }
    for i in 0..files {
        let fx = ns.apply(
            &Edit::Create {
                path: format!("/bench/d{}/f{}", i / 1000, i % 1000),
                perm: 0o644,
                owner: "hdfs".into(),
                group: "supergroup".into(),
                time: 1_700_000_000_000 + i as i64,
                replication: 3,
                block_size: 128 << 20,
                overwrite: false,
                create_parent: true,
                client: "bench".into(),
                client_host: "10.0.0.9".into(),
            },
            None,
        )?;
        let inode = fx.inode.expect("create names the inode");
        let block = BlockRec {
            id: ns.next_block_id(),
            gen_stamp: ns.next_gen_stamp(),
            len: 0,
        };
        ns.apply(
            &Edit::AddBlock {
                inode,
                client: "bench".into(),
                block,
                previous_len: None,
            },
            None,
        )?;
        bm.add_block(block.id, inode);
        ns.apply(
            &Edit::Close {
                inode,
                client: "bench".into(),
                time: 1_700_000_000_000 + i as i64,
                last_len: Some(1 << 20),
            },
            None,
        )?;
        let rec = BlockRec {
            len: 1 << 20,
            ..block
        };
        let e = expected(&ns, block.id, inode);
        for n in [(i % 6) as u32, ((i + 1) % 6) as u32, ((i + 3) % 6) as u32] {
            bm.replica_reported(n, rec, e.as_ref());
        }
    }
    let after = resident_bytes()?;
    let blocks = bm.blocks.len() as u64;
    let objects = ns.inode_count() as u64 + blocks;
    let bytes = after.saturating_sub(before);
    let build_seconds = started.elapsed().as_secs_f64();
    drop(bm);
    let dir = std::env::temp_dir().join(format!("hstack-footprint-{}", std::process::id()));
    let at = dir.display().to_string();
    std::fs::create_dir_all(&dir).map_err(|e| crate::error::io(&at, e))?;
    let started = Instant::now();
    let saved = crate::editlog::save_image(&dir, &ns.into_image());
    let image_write_seconds = started.elapsed().as_secs_f64();
    let size = saved.and_then(|p| std::fs::metadata(p).map(|m| m.len()));
    let _ = std::fs::remove_dir_all(&dir);
    let image_bytes = size.map_err(|e| crate::error::io(&at, e))?;
    Ok(Footprint {
        files,
        blocks,
        objects,
        bytes,
        bytes_per_object: bytes as f64 / objects.max(1) as f64,
        build_seconds,
        image_write_seconds,
        image_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_objects() {
        let r = memory_footprint(2500).unwrap();
        assert_eq!((r.files, r.blocks), (2500, 2500));
        // 2,500 files, 3 directories (/bench/d0..d2), /bench and the root.
        assert_eq!(r.objects, 2500 + 5 + 2500);
        assert!(r.image_bytes > 2500 * 20, "{} bytes", r.image_bytes);
    }
}
