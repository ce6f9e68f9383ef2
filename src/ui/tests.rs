//! Rendering tests: the pieces of every page render, hostile text (node
//! names, labels, log lines, component names) comes out as text, and no
//! page needs inline script or style (the CSP forbids both).

use std::collections::BTreeMap;

use super::layout::{self, Chrome, Nav};
use super::pages::{self, Page};
use crate::api::http::views::{DeploymentView, NodesReport};
use crate::app::analyze::{Dag, Edge};
use crate::app::{AppView, ComponentView};
use crate::proto::admin::{ListPeersResponse, PeerEntry};
use crate::proto::resource as pb;

const HOSTILE: &str = "<script>alert(1)</script>";
const ESCAPED: &str = "&lt;script&gt;alert(1)&lt;/script&gt;";

/// No markup from data, no inline script, no inline style.
fn assert_safe(html: &str) {
    assert!(
        !html.contains(HOSTILE),
        "hostile text rendered as markup:\n{html}"
    );
    assert!(
        !html.contains("style="),
        "an inline style would break the CSP"
    );
    for (i, _) in html.match_indices("<script") {
        let tag = &html[i..html[i..].find('>').map_or(html.len(), |j| i + j)];
        assert!(tag.contains("src="), "an inline script: {tag}");
    }
}

#[test]
fn the_shell_escapes_and_names_the_current_page() {
    let chrome = Chrome {
        node: HOSTILE.into(),
        user: Some(HOSTILE.into()),
        csrf: "c".repeat(64),
        live: Some(Page::Overview.stream()),
    };
    let html =
        layout::page(HOSTILE, Nav::Mesh, &chrome, maud::html! { p { (HOSTILE) } }).into_string();
    assert_safe(&html);
    assert!(html.contains(ESCAPED));
    assert!(html.contains(r#"<a href="/ui/mesh" aria-current="page">Mesh</a>"#));
    assert!(html.contains(r#"sse-connect="/ui/events?page=overview""#));
    assert!(
        html.contains(r#"name="_csrf" value="cccc"#),
        "the logout form carries the CSRF token"
    );
    assert!(html.contains("includeIndicatorStyles&quot;:false"));
}

#[test]
fn members_render_escaped() {
    let peers = ListPeersResponse {
        peers: vec![PeerEntry {
            id: "n1".into(),
            name: HOSTILE.into(),
            addr: "10.0.0.1:50051".into(),
            state: "suspect".into(),
            generation: 3,
            incarnation: 7,
            last_heard_secs: 1.5,
            providers: vec![format!("n1/{HOSTILE}")],
            ..Default::default()
        }],
        suspect: 1,
        ..Default::default()
    };
    let mut report = NodesReport::new(&peers, &BTreeMap::new());
    report.nodes[0].rtt_ms = Some(1.25);
    let html = pages::mesh::members(&report).into_string();
    assert_safe(&html);
    assert!(html.contains(ESCAPED));
    assert!(html.contains("1.2 ms") || html.contains("1.3 ms"), "{html}");
    assert!(html.contains(r#"<span class="badge wait">suspect</span>"#));
}

#[test]
fn a_deployment_renders_labels_and_history_as_text() {
    let d = pb::Deployment {
        id: "iarnet-1".into(),
        request_id: "r1".into(),
        image: HOSTILE.into(),
        state: "running".into(),
        labels: [("team".to_string(), HOSTILE.to_string())]
            .into_iter()
            .collect(),
        history: vec![pb::StateChange {
            state: "failed".into(),
            detail: format!("exit 1 \u{1b}[31m{HOSTILE}"),
            at_unix: 1.0,
        }],
        ..Default::default()
    };
    let html = pages::deployments::facts(&DeploymentView::from(&d), None).into_string();
    assert_safe(&html);
    assert!(html.contains(&format!("team={ESCAPED}")));
    assert!(
        html.contains("\\x1b[31m"),
        "control characters show as escapes"
    );
    assert!(!html.contains('\u{1b}'));
}

#[test]
fn log_lines_are_escaped_and_capped() {
    let lines = vec![
        pb::LogEntry {
            stderr: false,
            text: format!("{HOSTILE}\n"),
        },
        pb::LogEntry {
            stderr: true,
            text: "bell\u{7} and\ttab".into(),
        },
    ];
    let html = pages::logs::lines(&lines).into_string();
    assert_safe(&html);
    assert!(html.contains(&format!("<div>{ESCAPED}</div>")));
    assert!(
        html.contains(r#"<div class="err">bell\x07 and	tab</div>"#),
        "{html}"
    );

    let many: Vec<pb::LogEntry> = (0..2000)
        .map(|i| pb::LogEntry {
            stderr: false,
            text: format!("{i:>99}"),
        })
        .collect();
    let html = pages::logs::lines(&many).into_string();
    let kept = html.matches("<div>").count();
    assert_eq!(
        kept,
        pages::logs::MAX_CHARS / 99,
        "the newest lines within the cap"
    );
    assert!(html.ends_with(&format!("{:>99}</div>", 1999)));
}

fn component(name: &str, status: &str, deps: &[&str]) -> ComponentView {
    ComponentView {
        id: name.into(),
        name: name.into(),
        kind: "service".into(),
        language: None,
        framework: None,
        resources: crate::app::analyze::Requirements {
            cpu: 0.25,
            memory: 1 << 28,
            gpu: 0,
            storage: 0,
        },
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        status: status.into(),
        health: None,
        deployment_id: None,
        provider_id: None,
        owner_id: None,
        container_id: None,
        restarts: 0,
        exit_code: None,
        image: None,
        endpoints: BTreeMap::new(),
        build: None,
        placement: BTreeMap::new(),
    }
}

#[test]
fn applications_and_their_graph_render_escaped() {
    let components = vec![
        component("db", "running", &[]),
        component(HOSTILE, "pending", &["db"]),
    ];
    let dag = Dag {
        edges: vec![Edge {
            from: HOSTILE.into(),
            to: "db".into(),
            kind: "tcp".into(),
        }],
        levels: vec![vec!["db".into()], vec![HOSTILE.into()]],
    };
    let svg = pages::apps::dag_svg(&dag, &components).into_string();
    assert_safe(&svg);
    assert!(svg.contains(&format!("Dependency graph: {ESCAPED} depends on db")));
    assert_eq!(svg.matches("<rect").count(), 2);
    assert_eq!(svg.matches("<line").count(), 1);

    let app = AppView {
        id: "app-1".into(),
        name: HOSTILE.into(),
        git_url: "file:///x".into(),
        branch: "main".into(),
        local_path: "/w".into(),
        commit: crate::app::git::Commit {
            sha: "0123456789abcdef".into(),
            message: HOSTILE.into(),
            at_ms: 0,
        },
        modified_files: vec![],
        status: "partial".into(),
        components_count: 2,
        components,
        dag: Some(dag),
        analysis_notes: vec![],
        created_at_ms: 0,
        updated_at_ms: 0,
        private: false,
    };
    let html = pages::apps::cards(std::slice::from_ref(&app)).into_string();
    assert_safe(&html);
    assert!(html.contains("0123456789"), "a short commit");
}

#[test]
fn page_keys_round_trip_through_their_stream_urls() {
    let f = pages::deployments::Filters {
        state: "running".into(),
        q: "a&b=c".into(),
        ..Default::default()
    };
    for p in [
        Page::Overview,
        Page::Resources(3),
        Page::Mesh,
        Page::Deployments(f),
        Page::Deployment("r1".into()),
        Page::Logs("iarnet-1".into()),
        Page::Apps,
        Page::App("app-1".into()),
    ] {
        let url = p.stream();
        let q = url.strip_prefix("/ui/events?").expect("a stream URL");
        let key: Vec<(String, String)> = serde_urlencoded::from_str(q).unwrap();
        assert_eq!(Page::parse(&key[0].1), Some(p.clone()), "{url}");
    }
    assert_eq!(Page::parse("deployment:"), None);
    assert_eq!(Page::parse("nonsense"), None);
}

#[test]
fn ids_become_single_path_segments() {
    assert_eq!(layout::seg("iarnet-1a/docker"), "iarnet-1a%2Fdocker");
    assert_eq!(layout::seg("a b?c#d"), "a%20b%3Fc%23d");
    assert_eq!(layout::seg("x.y_z~1"), "x.y_z~1");
}
