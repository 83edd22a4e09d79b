//! The walker on toy graphs: ordering, the parallelism bound, failure
//! propagation and cancellation.

use super::*;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A graph of named nodes; `deps` are (node, dependency) pairs.
fn graph(names: &[&str], deps: &[(&str, &str)]) -> DiGraph<String, ()> {
    let mut g = DiGraph::new();
    let idx: Vec<NodeIndex> = names.iter().map(|n| g.add_node(n.to_string())).collect();
    let at = |n: &str| idx[names.iter().position(|x| *x == n).unwrap()];
    for (a, b) in deps {
        g.add_edge(at(a), at(b), ());
    }
    g
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn dependencies_finish_before_their_dependants_start() {
    // A diamond plus a tail: d needs b and c, which need a; e needs d.
    let g = graph(
        &["a", "b", "c", "d", "e"],
        &[("b", "a"), ("c", "a"), ("d", "b"), ("d", "c"), ("e", "d")],
    );
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = Recorded::default();
    let report = rt().block_on(walk(&g, 10, &Cancel::new(), &sink, |i, _| {
        let log = log.clone();
        let name = g[i].clone();
        async move {
            log.lock().unwrap().push(format!("start {name}"));
            tokio::task::yield_now().await;
            log.lock().unwrap().push(format!("end {name}"));
            Ok(String::new())
        }
    }));
    assert!(report.all_done());
    let log = log.lock().unwrap();
    let pos = |s: &str| log.iter().position(|x| x == s).unwrap();
    for (a, b) in [("b", "a"), ("c", "a"), ("d", "b"), ("d", "c"), ("e", "d")] {
        assert!(
            pos(&format!("end {b}")) < pos(&format!("start {a}")),
            "{a} started before {b} ended: {log:?}"
        );
    }
    let events = sink.events.lock().unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Finished { .. }))
            .count(),
        5
    );
}

#[test]
fn parallelism_bound_is_reached_and_never_exceeded() {
    let names: Vec<String> = (0..20).map(|i| format!("s{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let g = graph(&refs, &[]);
    let now = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    // Each step waits until 4 run at once: the walk only completes if the
    // walker really keeps 4 going, and the counter catches a fifth.
    let barrier = Arc::new(tokio::sync::Barrier::new(4));
    let report = rt().block_on(walk(&g, 4, &Cancel::new(), &Recorded::default(), |_, _| {
        let (now, max, barrier) = (now.clone(), max.clone(), barrier.clone());
        async move {
            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
            max.fetch_max(n, Ordering::SeqCst);
            barrier.wait().await;
            now.fetch_sub(1, Ordering::SeqCst);
            Ok(String::new())
        }
    }));
    assert!(report.all_done());
    assert_eq!(max.load(Ordering::SeqCst), 4);
}

#[test]
fn a_failure_skips_its_dependants_and_lets_others_finish() {
    // a <- b <- c, and b <- x; d is unrelated.
    let g = graph(
        &["a", "b", "c", "x", "d"],
        &[("b", "a"), ("c", "b"), ("x", "b")],
    );
    let sink = Recorded::default();
    let report = rt().block_on(walk(&g, 2, &Cancel::new(), &sink, |i, _| {
        let name = g[i].clone();
        async move {
            if name == "b" {
                Err(StepError::Failed("disk on fire".into()))
            } else {
                Ok(format!("did {name}"))
            }
        }
    }));
    let o = &report.outcomes;
    assert!(o[0].is_done());
    assert!(matches!(&o[1], Outcome::Failed { error, .. } if error == "disk on fire"));
    assert_eq!(
        o[2],
        Outcome::Skipped {
            cause: NodeIndex::new(1)
        }
    );
    assert_eq!(
        o[3],
        Outcome::Skipped {
            cause: NodeIndex::new(1)
        }
    );
    assert!(matches!(&o[4], Outcome::Done { detail, .. } if detail == "did d"));
    let events = sink.events.lock().unwrap();
    assert!(events.contains(&Event::Skipped {
        step: "c".into(),
        cause: "b".into()
    }));
    assert!(!events.contains(&Event::Started { step: "c".into() }));
}

#[test]
fn a_panicking_step_fails_like_any_other() {
    let g = graph(&["a", "b"], &[("b", "a")]);
    let report = rt().block_on(walk(
        &g,
        1,
        &Cancel::new(),
        &Recorded::default(),
        |_, _| async move {
            if true {
                panic!("oops");
            }
            Ok(String::new())
        },
    ));
    assert!(matches!(report.outcomes[0], Outcome::Failed { .. }));
    assert_eq!(
        report.outcomes[1],
        Outcome::Skipped {
            cause: NodeIndex::new(0)
        }
    );
}

#[test]
fn cancellation_starts_nothing_new_and_lets_running_steps_finish() {
    // Parallelism 2: "long" and "trigger" start; trigger cancels the run.
    // "long" notices nothing and finishes; "watcher" waits on the cancel
    // and abandons; nothing else starts.
    let g = graph(
        &["long", "trigger", "later1", "later2", "after_long"],
        &[("after_long", "long")],
    );
    let started = Arc::new(Mutex::new(Vec::new()));
    let gate = Arc::new(tokio::sync::Notify::new());
    let cancel = Cancel::new();
    let sink = Recorded::default();
    let report = rt().block_on(walk(&g, 2, &cancel, &sink, |i, c| {
        let name = g[i].clone();
        let started = started.clone();
        let gate = gate.clone();
        async move {
            started.lock().unwrap().push(name.clone());
            match name.as_str() {
                "long" => {
                    // Finishes only once the run is cancelled.
                    c.cancelled().await;
                    gate.notified().await;
                    Ok("finished anyway".into())
                }
                "trigger" => {
                    c.cancel();
                    gate.notify_one();
                    Ok(String::new())
                }
                _ => Ok(String::new()),
            }
        }
    }));
    assert!(report.interrupted);
    assert!(report.outcomes[0].is_done());
    assert!(report.outcomes[1].is_done());
    for i in 2..5 {
        assert_eq!(report.outcomes[i], Outcome::NotStarted);
    }
    assert_eq!(started.lock().unwrap().len(), 2);
    let events = sink.events.lock().unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Interrupted { .. }))
    );
    assert!(events.contains(&Event::NotStarted {
        step: "after_long".into()
    }));
}

#[test]
fn a_step_watching_the_cancel_can_abandon() {
    let g = graph(&["watcher", "canceller"], &[]);
    let cancel = Cancel::new();
    let report = rt().block_on(walk(&g, 2, &cancel, &Recorded::default(), |i, c| {
        let name = g[i].clone();
        async move {
            if name == "watcher" {
                c.cancelled().await;
                Err(StepError::Abandoned(
                    "stopped before writing anything".into(),
                ))
            } else {
                c.cancel();
                Ok(String::new())
            }
        }
    }));
    assert!(matches!(
        &report.outcomes[0],
        Outcome::Abandoned { reason, .. } if reason.contains("before writing")
    ));
    assert!(report.outcomes[1].is_done());
    assert!(!report.all_done());
}

#[test]
fn cancelled_before_the_walk_starts_nothing() {
    let g = graph(&["a", "b"], &[]);
    let cancel = Cancel::new();
    cancel.cancel();
    let ran = Arc::new(AtomicUsize::new(0));
    let report = rt().block_on(walk(&g, 2, &cancel, &Recorded::default(), |_, _| {
        let ran = ran.clone();
        async move {
            ran.fetch_add(1, Ordering::SeqCst);
            Ok(String::new())
        }
    }));
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert!(report.outcomes.iter().all(|o| *o == Outcome::NotStarted));
}
