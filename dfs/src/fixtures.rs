//! The on-disk formats of the file system, held to fixtures kept in the
//! repository (`tests/fixtures/formats/`): an edit log segment with every
//! kind of edit, and the namespace image they make. A change that would
//! read them differently fails here. `HSTACK_BLESS=1` writes a fixture that
//! is missing (a new format version gets a new file; old ones stay).

use std::path::{Path, PathBuf};

use crate::editlog::{self, Journal, LocalJournal, SEGMENT_FORMAT};
use crate::namespace::{BlockRec, Edit, Namespace};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/formats")
}

/// Every kind of edit once, in an order that applies cleanly.
fn edits() -> Vec<Edit> {
    let b1 = BlockRec {
        id: 1,
        gen_stamp: 1001,
        len: 0,
    };
    vec![
        Edit::Mkdirs {
            path: "/user/alice".into(),
            perm: 0o755,
            owner: "alice".into(),
            group: "staff".into(),
            time: 1_700_000_000_000,
            create_parent: true,
        },
        Edit::Create {
            path: "/user/alice/data.txt".into(),
            perm: 0o644,
            owner: "alice".into(),
            group: "staff".into(),
            time: 1_700_000_000_100,
            replication: 3,
            block_size: 1 << 20,
            overwrite: false,
            create_parent: false,
            client: "client-1".into(),
            client_host: "127.0.0.1".into(),
        },
        Edit::AddBlock {
            inode: 4,
            client: "client-1".into(),
            block: b1,
            previous_len: None,
        },
        Edit::GenStamp { gen_stamp: 1002 },
        Edit::UpdateBlock {
            inode: 4,
            block_id: 1,
            gen_stamp: 1002,
            len: 4096,
        },
        Edit::AddBlock {
            inode: 4,
            client: "client-1".into(),
            block: BlockRec {
                id: 2,
                gen_stamp: 1003,
                len: 0,
            },
            previous_len: Some(4096),
        },
        Edit::AbandonBlock {
            inode: 4,
            client: "client-1".into(),
            block_id: 2,
        },
        Edit::ReassignLease {
            inode: 4,
            client: "client-2".into(),
        },
        Edit::Close {
            inode: 4,
            client: "client-2".into(),
            time: 1_700_000_000_200,
            last_len: Some(4096),
        },
        Edit::SetReplication {
            path: "/user/alice/data.txt".into(),
            replication: 2,
        },
        Edit::SetPermission {
            path: "/user/alice/data.txt".into(),
            perm: 0o600,
        },
        Edit::SetOwner {
            path: "/user/alice/data.txt".into(),
            owner: Some("bob".into()),
            group: None,
        },
        Edit::SetTimes {
            path: "/user/alice/data.txt".into(),
            mtime: Some(1_700_000_000_300),
            atime: None,
        },
        Edit::Rename {
            src: "/user/alice/data.txt".into(),
            dst: "/user/alice/kept.txt".into(),
            time: 1_700_000_000_400,
        },
        Edit::Mkdirs {
            path: "/tmp/gone".into(),
            perm: 0o1777,
            owner: "hdfs".into(),
            group: "supergroup".into(),
            time: 1_700_000_000_500,
            create_parent: true,
        },
        Edit::Delete {
            path: "/tmp/gone".into(),
            recursive: true,
            time: 1_700_000_000_600,
        },
    ]
}

/// The namespace `edits()` make.
fn expected() -> Namespace {
    let mut ns = Namespace::new("hdfs", "supergroup");
    for (i, e) in edits().iter().enumerate() {
        ns.apply(e, None)
            .unwrap_or_else(|err| panic!("edit {i} ({e:?}): {err}"));
        ns.txid = i as u64 + 1;
    }
    ns
}

fn bless_or_fail(path: &Path, write: impl FnOnce(&Path)) {
    if path.exists() {
        return;
    }
    if std::env::var_os("HSTACK_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("create fixtures dir");
        write(path);
        return;
    }
    panic!(
        "fixture {} is missing; run `HSTACK_BLESS=1 cargo test -p hstack-dfs fixtures` to write it",
        path.display()
    );
}

#[test]
fn an_edit_log_segment_of_format_1_reads_back_every_edit() {
    let n = edits().len() as u64;
    let fixture = fixtures().join(format!("edits_v1_{:019}-{:019}", 1, n));
    bless_or_fail(&fixture, |path| {
        let dir = tempfile::tempdir().unwrap();
        let mut j = LocalJournal::open(dir.path()).unwrap();
        j.start_segment(1).unwrap();
        let mut bytes = Vec::new();
        for (i, e) in edits().iter().enumerate() {
            editlog::frame(i as u64 + 1, e, &mut bytes);
        }
        j.write(&bytes).unwrap();
        j.sync().unwrap();
        j.finalize_segment(1, n).unwrap();
        let written = dir.path().join(format!("edits_{:019}-{:019}", 1, n));
        std::fs::copy(written, path).unwrap();
    });
    let bytes = std::fs::read(&fixture).unwrap();
    assert_eq!(&bytes[..8], &SEGMENT_FORMAT.magic, "the segment's magic");
    assert_eq!(bytes[8..12], 1u32.to_le_bytes(), "format version 1");
    // The journal reads it from a directory of its own.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        &fixture,
        dir.path().join(format!("edits_{:019}-{:019}", 1, n)),
    )
    .unwrap();
    let j = LocalJournal::open(dir.path()).unwrap();
    let read = j.read_finalized(1, n).unwrap();
    let want: Vec<(u64, Edit)> = edits()
        .into_iter()
        .enumerate()
        .map(|(i, e)| (i as u64 + 1, e))
        .collect();
    assert_eq!(read, want);
}

#[test]
fn a_namespace_image_of_format_1_reads_back_the_namespace() {
    let fixture = fixtures().join("image_v1");
    bless_or_fail(&fixture, |path| {
        let dir = tempfile::tempdir().unwrap();
        let written = editlog::save_image(dir.path(), &expected().into_image()).unwrap();
        std::fs::copy(written, path).unwrap();
    });
    let img = editlog::load_image(&fixture).unwrap();
    let encode = hstack_daemon::format::encode_body::<crate::namespace::Image>;
    assert_eq!(encode(&img), encode(&expected().into_image()));
    let ns = Namespace::from_image(img, "hdfs", "supergroup").unwrap();
    let kept = ns
        .stat("/user/alice/kept.txt", None)
        .unwrap()
        .expect("kept.txt");
    assert_eq!(
        (kept.len, kept.owner.as_str(), kept.perm),
        (4096, "bob", 0o600)
    );
    assert!(ns.stat("/tmp/gone", None).unwrap().is_none());
}

#[test]
fn a_newer_version_is_refused_by_name_and_never_misread() {
    let fixture = fixtures().join("image_v1");
    let mut bytes = std::fs::read(&fixture).unwrap();
    bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("image_0000000000000000016");
    std::fs::write(&p, &bytes).unwrap();
    let e = editlog::load_image(&p).unwrap_err();
    assert_eq!(e.code, crate::Code::Unimplemented, "{e}");
    assert!(e.message.contains("version 2"), "{e}");
    // A segment too: the namenode does not start on it.
    let seg = fixtures().join(format!("edits_v1_{:019}-{:019}", 1, edits().len()));
    let mut bytes = std::fs::read(seg).unwrap();
    bytes[8..12].copy_from_slice(&7u32.to_le_bytes());
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path()
            .join("edits_0000000000000000001-0000000000000000016"),
        &bytes,
    )
    .unwrap();
    let e = LocalJournal::open(d.path())
        .unwrap()
        .read_finalized(1, 16)
        .unwrap_err();
    assert!(e.to_string().contains("version 7"), "{e}");
}
