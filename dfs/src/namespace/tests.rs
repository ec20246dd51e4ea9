use super::*;

fn caller(user: &str) -> Caller {
    Caller {
        user: user.into(),
        groups: vec![format!("{user}-group")].into(),
    }
}

fn mkdir(p: &str, user: &str, perm: u16) -> Edit {
    Edit::Mkdirs {
        path: p.into(),
        perm,
        owner: user.into(),
        group: format!("{user}-group"),
        time: 10,
        create_parent: true,
    }
}

fn create(p: &str, user: &str) -> Edit {
    Edit::Create {
        path: p.into(),
        perm: 0o644,
        owner: user.into(),
        group: format!("{user}-group"),
        time: 20,
        replication: 3,
        block_size: 1024,
        overwrite: false,
        create_parent: false,
        client: format!("client-{user}"),
        client_host: "h1".into(),
    }
}

/// Adds one block to the open file `id` (hdfs's) and closes it at `len`.
fn write_one_block(ns: &mut Namespace, id: InodeId, len: u64) -> BlockRec {
    let block = BlockRec {
        id: ns.next_block_id(),
        gen_stamp: ns.next_gen_stamp(),
        len: 0,
    };
    let client = "client-hdfs".to_string();
    let add = Edit::AddBlock {
        inode: id,
        client: client.clone(),
        block,
        previous_len: None,
    };
    ok(ns, add, "hdfs");
    let close = Edit::Close {
        inode: id,
        client,
        time: 40,
        last_len: Some(len),
    };
    ok(ns, close, "hdfs");
    block
}

fn snapshot(ns: &Namespace) -> Vec<u8> {
    hstack_daemon::format::encode_body(&ns.to_image())
}

/// Applies as `user`; on success the edit is returned for replay.
fn ok(ns: &mut Namespace, e: Edit, user: &str) -> (Edit, Effects) {
    let fx = ns
        .apply(&e, Some(&caller(user)))
        .unwrap_or_else(|err| panic!("{e:?}: {err}"));
    (e, fx)
}

/// Must fail with `kind` and change nothing.
fn refused(ns: &mut Namespace, e: Edit, user: &str, kind: Code) -> String {
    let before = snapshot(ns);
    let err = ns.apply(&e, Some(&caller(user))).unwrap_err();
    assert_eq!(err.code, kind, "{e:?}: {err}");
    assert_eq!(snapshot(ns), before, "{e:?} changed the namespace");
    err.message
}

fn names(ns: &Namespace, p: &str) -> Vec<String> {
    ns.list(p, "", 1000, None)
        .unwrap()
        .0
        .into_iter()
        .map(|s| s.path)
        .collect()
}

#[test]
fn directories_files_and_listing() {
    let mut ns = Namespace::new("hdfs", "supergroup");
    ok(&mut ns, mkdir("/user/alice", "hdfs", 0o755), "hdfs");
    ok(&mut ns, mkdir("/user/bob", "hdfs", 0o755), "hdfs");
    ok(&mut ns, create("/user/alice/b", "hdfs"), "hdfs");
    ok(&mut ns, create("/user/alice/a", "hdfs"), "hdfs");
    assert_eq!(names(&ns, "/user"), vec!["/user/alice", "/user/bob"]);
    assert_eq!(
        names(&ns, "/user/alice/"),
        vec!["/user/alice/a", "/user/alice/b"]
    );
    // Paging.
    let (page, rest) = ns.list("/user/alice", "a", 1, None).unwrap();
    assert_eq!((page[0].path.as_str(), rest), ("/user/alice/b", 0));
    let (page, rest) = ns.list("/user/alice", "", 1, None).unwrap();
    assert_eq!((page.len(), rest), (1, 1));
    let st = ns.stat("/user/alice/a", None).unwrap().unwrap();
    assert!(!st.is_dir && st.under_construction && st.replication == 3);
    assert_eq!(ns.stat("/nope", None).unwrap(), None);
    // mkdir -p over an existing directory is fine; over a file it is not.
    ok(&mut ns, mkdir("/user", "hdfs", 0o755), "hdfs");
    refused(
        &mut ns,
        mkdir("/user/alice/a", "hdfs", 0o755),
        "hdfs",
        Code::AlreadyExists,
    );
    refused(
        &mut ns,
        mkdir("/user/alice/a/x", "hdfs", 0o755),
        "hdfs",
        Code::ParentNotDirectory,
    );
}

#[test]
fn writable_file_is_what_an_overwrite_needs() {
    let mut ns = Namespace::new("hdfs", "supergroup");
    ok(&mut ns, mkdir("/open", "alice", 0o755), "hdfs");
    ok(&mut ns, mkdir("/shut", "alice", 0o700), "hdfs");
    ok(&mut ns, create("/open/f", "alice"), "alice");
    ok(&mut ns, create("/shut/f", "alice"), "alice");
    let id = ns.resolve_id("/open/f").unwrap();
    assert_eq!(ns.writable_file("/open/f", &caller("alice")).unwrap(), id);
    assert_eq!(ns.writable_file("/open/f", &caller("hdfs")).unwrap(), id);
    let deny = |p: &str| ns.writable_file(p, &caller("bob")).unwrap_err().code;
    assert_eq!(deny("/open/f"), Code::PermissionDenied, "0644, not bob's");
    assert_eq!(deny("/shut/f"), Code::PermissionDenied, "no traverse");
    assert_eq!(deny("/open/none"), Code::FileNotFound);
    assert_eq!(
        ns.writable_file("/open", &caller("alice"))
            .unwrap_err()
            .code,
        Code::IsDirectory
    );
}

#[test]
fn bad_creates_and_deletes_change_nothing() {
    let mut ns = Namespace::new("hdfs", "supergroup");
    ok(&mut ns, mkdir("/d/sub", "hdfs", 0o755), "hdfs");
    ok(&mut ns, create("/d/f", "hdfs"), "hdfs");
    refused(&mut ns, create("/d/sub", "hdfs"), "hdfs", Code::IsDirectory);
    refused(&mut ns, create("/d/f", "hdfs"), "hdfs", Code::AlreadyExists);
    refused(
        &mut ns,
        create("/missing/f", "hdfs"),
        "hdfs",
        Code::FileNotFound,
    );
    refused(
        &mut ns,
        create("/d/f/g", "hdfs"),
        "hdfs",
        Code::ParentNotDirectory,
    );
    refused(
        &mut ns,
        create("relative", "hdfs"),
        "hdfs",
        Code::InvalidPath,
    );
    let mut zero = create("/d/z", "hdfs");
    if let Edit::Create { replication, .. } = &mut zero {
        *replication = 0;
    }
    refused(&mut ns, zero, "hdfs", Code::InvalidArgument);
    let mut odd = create("/d/z", "hdfs");
    if let Edit::Create { block_size, .. } = &mut odd {
        *block_size = 1000;
    }
    refused(&mut ns, odd, "hdfs", Code::InvalidArgument);
    let del = |p: &str, recursive| Edit::Delete {
        path: p.into(),
        recursive,
        time: 30,
    };
    refused(&mut ns, del("/d", false), "hdfs", Code::DirectoryNotEmpty);
    refused(&mut ns, del("/", true), "hdfs", Code::InvalidArgument);
    refused(&mut ns, del("/nope", true), "hdfs", Code::FileNotFound);
    let (_, fx) = ok(&mut ns, del("/d", true), "hdfs");
    assert_eq!(fx.closed.len(), 1, "the open file's lease goes");
    assert_eq!(ns.inode_count(), 1);
}

#[test]
fn overwrite_replaces_a_closed_file_and_frees_its_blocks() {
    let mut ns = Namespace::new("hdfs", "supergroup");
    let (_, fx) = ok(&mut ns, create("/f", "hdfs"), "hdfs");
    let id = fx.inode.unwrap();
    let block = write_one_block(&mut ns, id, 700);
    assert_eq!(ns.stat("/f", None).unwrap().unwrap().len, 700);
    let mut over = create("/f", "hdfs");
    if let Edit::Create { overwrite, .. } = &mut over {
        *overwrite = true;
    }
    let (_, fx) = ok(&mut ns, over, "hdfs");
    assert_eq!(fx.removed_blocks, vec![block.id]);
    assert_ne!(fx.inode, Some(id));
    assert_eq!(ns.stat("/f", None).unwrap().unwrap().len, 0);
}

#[test]
fn blocks_follow_the_lease() {
    let mut ns = Namespace::new("hdfs", "supergroup");
    ok(&mut ns, mkdir("/w", "hdfs", 0o777), "hdfs");
    let (_, fx) = ok(&mut ns, create("/w/f", "alice"), "alice");
    let id = fx.inode.unwrap();
    let b = |ns: &Namespace| BlockRec {
        id: ns.next_block_id(),
        gen_stamp: ns.next_gen_stamp(),
        len: 0,
    };
    let b1 = b(&ns);
    let add = |block, client: &str, previous_len| Edit::AddBlock {
        inode: id,
        client: client.into(),
        block,
        previous_len,
    };
    refused(
        &mut ns,
        add(b1, "someone-else", None),
        "alice",
        Code::LeaseMismatch,
    );
    ok(&mut ns, add(b1, "client-alice", None), "alice");
    let b2 = b(&ns);
    ok(&mut ns, add(b2, "client-alice", Some(1024)), "alice");
    ok(
        &mut ns,
        Edit::AbandonBlock {
            inode: id,
            client: "client-alice".into(),
            block_id: b2.id,
        },
        "alice",
    );
    let b3 = b(&ns);
    assert!(b3.id > b2.id, "block ids are never reused");
    ok(&mut ns, add(b3, "client-alice", Some(1024)), "alice");
    ok(
        &mut ns,
        Edit::UpdateBlock {
            inode: id,
            block_id: b3.id,
            gen_stamp: b3.gen_stamp + 5,
            len: 10,
        },
        "alice",
    );
    refused(
        &mut ns,
        Edit::UpdateBlock {
            inode: id,
            block_id: b3.id,
            gen_stamp: b3.gen_stamp,
            len: 10,
        },
        "alice",
        Code::InvalidArgument,
    );
    ok(
        &mut ns,
        Edit::Close {
            inode: id,
            client: "client-alice".into(),
            time: 50,
            last_len: Some(300),
        },
        "alice",
    );
    let f = ns.file(id).unwrap();
    assert_eq!(f.len(), 1324);
    assert_eq!(f.blocks.len(), 2);
    assert!(f.uc.is_none());
    let b4 = b(&ns);
    refused(
        &mut ns,
        add(b4, "client-alice", None),
        "alice",
        Code::LeaseMismatch,
    );
}

#[test]
fn rename_rules() {
    let mut ns = Namespace::new("hdfs", "supergroup");
    ok(&mut ns, mkdir("/a/b", "hdfs", 0o755), "hdfs");
    ok(&mut ns, mkdir("/dst", "hdfs", 0o755), "hdfs");
    ok(&mut ns, create("/a/f", "hdfs"), "hdfs");
    let mv = |s: &str, d: &str| Edit::Rename {
        src: s.into(),
        dst: d.into(),
        time: 60,
    };
    refused(&mut ns, mv("/a", "/a/b/c"), "hdfs", Code::InvalidArgument);
    refused(&mut ns, mv("/nope", "/x"), "hdfs", Code::FileNotFound);
    refused(
        &mut ns,
        mv("/a/f", "/missing/f"),
        "hdfs",
        Code::FileNotFound,
    );
    ok(&mut ns, mv("/a/f", "/dst"), "hdfs");
    assert_eq!(names(&ns, "/dst"), vec!["/dst/f"]);
    ok(&mut ns, mv("/dst/f", "/a/g"), "hdfs");
    ok(&mut ns, create("/a/h", "hdfs"), "hdfs");
    refused(&mut ns, mv("/a/g", "/a/h"), "hdfs", Code::AlreadyExists);
    ok(&mut ns, mv("/a", "/z"), "hdfs");
    assert_eq!(names(&ns, "/z"), vec!["/z/b", "/z/g", "/z/h"]);
    assert_eq!(
        ns.full_path(ns.stat("/z/b", None).unwrap().unwrap().inode),
        "/z/b"
    );
}

#[test]
fn permissions_are_checked_for_the_caller() {
    let mut ns = Namespace::new("hdfs", "supergroup");
    ok(&mut ns, mkdir("/secure", "hdfs", 0o755), "hdfs");
    ok(&mut ns, mkdir("/shared", "hdfs", 0o1777), "hdfs");
    let msg = refused(
        &mut ns,
        create("/secure/x", "alice"),
        "alice",
        Code::PermissionDenied,
    );
    assert!(msg.contains("user=alice, access=WRITE"), "{msg}");
    assert!(msg.contains("drwxr-xr-x"), "{msg}");
    ok(&mut ns, create("/shared/alice-file", "alice"), "alice");
    // The sticky bit keeps bob from deleting alice's file.
    let del = Edit::Delete {
        path: "/shared/alice-file".into(),
        recursive: false,
        time: 70,
    };
    refused(&mut ns, del.clone(), "bob", Code::PermissionDenied);
    // Only the owner (or the superuser) changes permissions.
    let chmod = |p: &str, perm| Edit::SetPermission {
        path: p.into(),
        perm,
    };
    refused(
        &mut ns,
        chmod("/shared/alice-file", 0o600),
        "bob",
        Code::PermissionDenied,
    );
    ok(&mut ns, chmod("/shared/alice-file", 0o600), "alice");
    let err = ns
        .open("/shared/alice-file", Some(&caller("bob")))
        .unwrap_err();
    assert_eq!(err.code, Code::PermissionDenied);
    assert!(ns
        .open("/shared/alice-file", Some(&caller("alice")))
        .is_ok());
    assert!(ns.open("/shared/alice-file", Some(&caller("hdfs"))).is_ok());
    // Traverse: no x on a directory hides what is below it.
    ok(&mut ns, mkdir("/shared/private", "alice", 0o700), "alice");
    ok(&mut ns, create("/shared/private/f", "alice"), "alice");
    let err = ns
        .stat("/shared/private/f", Some(&caller("bob")))
        .unwrap_err();
    assert_eq!(err.code, Code::PermissionDenied);
    // chown: only the superuser changes the owner.
    let chown = Edit::SetOwner {
        path: "/shared/alice-file".into(),
        owner: Some("bob".into()),
        group: None,
    };
    refused(&mut ns, chown.clone(), "alice", Code::PermissionDenied);
    ok(&mut ns, chown, "hdfs");
    ok(&mut ns, del, "bob");
}

#[test]
fn replaying_the_edits_rebuilds_the_same_namespace() {
    let mut ns = Namespace::new("hdfs", "supergroup");
    let mut log = Vec::new();
    let mut push = |ns: &mut Namespace, e: Edit| {
        let (e, fx) = ok(ns, e, "hdfs");
        log.push(e);
        fx
    };
    push(&mut ns, mkdir("/a/b/c", "hdfs", 0o755));
    let id = push(&mut ns, create("/a/f", "hdfs")).inode.unwrap();
    let block = BlockRec {
        id: ns.next_block_id(),
        gen_stamp: ns.next_gen_stamp(),
        len: 0,
    };
    push(
        &mut ns,
        Edit::AddBlock {
            inode: id,
            client: "client-hdfs".into(),
            block,
            previous_len: None,
        },
    );
    push(
        &mut ns,
        Edit::Close {
            inode: id,
            client: "client-hdfs".into(),
            time: 99,
            last_len: Some(5),
        },
    );
    push(
        &mut ns,
        Edit::Rename {
            src: "/a/b".into(),
            dst: "/x".into(),
            time: 100,
        },
    );
    push(
        &mut ns,
        Edit::SetReplication {
            path: "/a/f".into(),
            replication: 2,
        },
    );
    push(
        &mut ns,
        Edit::SetOwner {
            path: "/x".into(),
            owner: Some("carol".into()),
            group: Some("staff".into()),
        },
    );
    push(
        &mut ns,
        Edit::Delete {
            path: "/x/c".into(),
            recursive: false,
            time: 101,
        },
    );
    let mut replayed = Namespace::new("hdfs", "supergroup");
    for e in &log {
        replayed.apply(e, None).unwrap();
    }
    assert_eq!(snapshot(&replayed), snapshot(&ns));
    // And through an image.
    let back = Namespace::from_image(ns.to_image(), "hdfs", "supergroup").unwrap();
    assert_eq!(snapshot(&back), snapshot(&ns));
    assert_eq!(names(&back, "/a"), vec!["/a/f"]);
}

#[test]
fn summary_counts_replicated_space() {
    let mut ns = Namespace::new("hdfs", "supergroup");
    ok(&mut ns, mkdir("/s/t", "hdfs", 0o755), "hdfs");
    let id = ok(&mut ns, create("/s/t/f", "hdfs"), "hdfs")
        .1
        .inode
        .unwrap();
    write_one_block(&mut ns, id, 100);
    let s = ns.summary("/s", None).unwrap();
    assert_eq!(
        (s.files, s.directories, s.length, s.space_consumed),
        (1, 2, 100, 300)
    );
    assert_eq!(mode_string(0o1777), "rwxrwxrwt");
    assert_eq!(mode_string(0o644), "rw-r--r--");
}
