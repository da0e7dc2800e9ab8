//! One fsync round covers the appends of many groups.

use std::sync::{Arc, Barrier};

use ordo_wal::{Durability, Entry, Options, SharedLog, SharedOptions};

#[test]
fn appends_of_a_hundred_groups_become_durable_with_fewer_fsyncs_than_appends() {
    let dir = tempfile::tempdir().unwrap();
    let options = SharedOptions {
        journal: Options {
            durability: Durability::Always,
            ..Options::default()
        },
        collect_in_background: false,
        ..SharedOptions::default()
    };
    let log = SharedLog::open(dir.path(), options).unwrap();
    let (threads, appends) = (100u64, 10u64);
    let groups: Vec<_> = (0..threads).map(|id| log.group(id).unwrap()).collect();
    let before = log.stats().fsyncs;
    let start = Arc::new(Barrier::new(threads as usize));
    let handles: Vec<_> = groups
        .iter()
        .cloned()
        .map(|g| {
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                for i in 1..=appends {
                    let e = Entry::new(i, 1, 0, vec![g.id() as u8; 100]);
                    assert_eq!(g.append(&[e]).unwrap(), i);
                    assert!(g.wait_durable(i).unwrap() >= i, "group {}", g.id());
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let fsyncs = log.stats().fsyncs - before;
    let total = threads * appends;
    eprintln!("{total} appends of {threads} groups, each waited for: {fsyncs} fsyncs");
    for g in &groups {
        assert_eq!((g.durable_index(), g.last_index()), (appends, appends));
    }
    // Every append was waited for, so at least one fsync covered each; rounds shared by
    // several groups make fewer (how many fewer depends on timing, so is not asserted).
    assert!(
        fsyncs >= 1 && fsyncs <= total,
        "{fsyncs} fsyncs for {total} appends"
    );
    drop(groups);
    drop(log);
    let log = SharedLog::open(dir.path(), SharedOptions::default()).unwrap();
    for id in 0..threads {
        assert_eq!(log.group(id).unwrap().last_index(), appends);
    }
}
