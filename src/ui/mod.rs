//! The operator web UI, served by the station on the API listener (the [`PAGES`], and `/ui/…`
//! for its assets), from files built into the binary: one binary, no internet, no build
//! step. Pages are plain HTML with a small script layer (`assets/app.js`: sign-in, the
//! language, calls to `/api/v1` with the bearer token); every visible string comes from
//! `assets/i18n.json` (English and Simplified Chinese). Why this approach: docs/UI.md.
//!
//! The pages hold no data and need no token; what they show comes from the JSON API, with the
//! roles of `api::auth`. [`live`] makes the live view's pictures.

pub mod live;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// A page: its path, its key in the navigation and i18n (`nav.<key>`), its body and script.
pub struct Page {
    pub path: &'static str,
    pub key: &'static str,
    pub body: &'static str,
    pub script: &'static str,
}

/// The pages, in navigation order.
pub const PAGES: &[Page] = &[
    Page { path: "/", key: "health", body: include_str!("pages/health.html"), script: "health.js" },
    Page { path: "/live", key: "live", body: include_str!("pages/live.html"), script: "live.js" },
    Page { path: "/review", key: "review", body: include_str!("pages/review.html"), script: "review.js" },
    Page {
        path: "/operating-point",
        key: "operating_point",
        body: include_str!("pages/operating_point.html"),
        script: "operating_point.js",
    },
    Page { path: "/teach", key: "teach", body: include_str!("pages/teach.html"), script: "teach.js" },
    Page { path: "/recipes", key: "recipes", body: include_str!("pages/recipes.html"), script: "recipes.js" },
    Page { path: "/stats", key: "stats", body: include_str!("pages/stats.html"), script: "stats.js" },
];

/// The assets under `/ui/`: name, content type, bytes.
pub const ASSETS: &[(&str, &str, &str)] = &[
    ("app.css", "text/css; charset=utf-8", include_str!("assets/app.css")),
    ("app.js", "text/javascript; charset=utf-8", include_str!("assets/app.js")),
    ("i18n.json", "application/json", include_str!("assets/i18n.json")),
    ("health.js", "text/javascript; charset=utf-8", include_str!("assets/health.js")),
    ("live.js", "text/javascript; charset=utf-8", include_str!("assets/live.js")),
    ("review.js", "text/javascript; charset=utf-8", include_str!("assets/review.js")),
    ("operating_point.js", "text/javascript; charset=utf-8", include_str!("assets/operating_point.js")),
    ("teach.js", "text/javascript; charset=utf-8", include_str!("assets/teach.js")),
    ("recipes.js", "text/javascript; charset=utf-8", include_str!("assets/recipes.js")),
    ("stats.js", "text/javascript; charset=utf-8", include_str!("assets/stats.js")),
];

const LAYOUT: &str = include_str!("pages/layout.html");

/// The whole HTML of `page`: the layout with its navigation, body and script.
pub fn render(page: &Page) -> String {
    let nav: String = PAGES
        .iter()
        .map(|p| {
            let current = if p.path == page.path { " aria-current=\"page\"" } else { "" };
            format!("<a href=\"{}\" data-i18n=\"nav.{}\"{current}>{}</a>", p.path, p.key, p.key)
        })
        .collect();
    LAYOUT
        .replace("{{nav}}", &nav)
        .replace("{{page}}", page.key)
        .replace("{{body}}", page.body)
        .replace("{{script}}", page.script)
}

/// The UI's routes (no state, no token: the pages carry no data).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut router = Router::new();
    for page in PAGES {
        let html = render(page);
        router = router.route(
            page.path,
            get(move || async move {
                ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], html)
            }),
        );
    }
    router.route("/ui/{name}", get(asset))
}

async fn asset(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, kind, body)) => {
            ([(header::CONTENT_TYPE, *kind), (header::CACHE_CONTROL, "no-cache")], *body).into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn keys(v: &serde_json::Value, prefix: &str, out: &mut BTreeSet<String>) {
        if let Some(o) = v.as_object() {
            for (k, v) in o {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                if v.is_object() {
                    keys(v, &key, out)
                } else {
                    out.insert(key);
                }
            }
        }
    }

    /// Every string a page or script names is translated into every language, and the languages
    /// have the same keys.
    #[test]
    fn every_string_is_in_every_language() {
        let dict: serde_json::Value = serde_json::from_str(include_str!("assets/i18n.json")).unwrap();
        let langs = dict.as_object().unwrap();
        assert!(langs.contains_key("en") && langs.contains_key("zh-CN"));
        let mut sets = Vec::new();
        for (lang, strings) in langs {
            let mut set = BTreeSet::new();
            keys(strings, "", &mut set);
            sets.push((lang.clone(), set));
        }
        for (lang, set) in &sets[1..] {
            assert_eq!(set, &sets[0].1, "{lang} and {} differ", sets[0].0);
        }
        let used = regex_lite_keys(
            &[LAYOUT]
                .into_iter()
                .chain(PAGES.iter().map(|p| p.body))
                .chain(ASSETS.iter().filter(|a| a.0.ends_with(".js")).map(|a| a.2))
                .collect::<Vec<_>>(),
        );
        for key in used {
            if key.ends_with('.') || key.ends_with('_') {
                // A key made at run time (`t("verdict." + v)`): its group must exist.
                assert!(sets[0].1.iter().any(|k| k.starts_with(&key)), "no strings under {key}");
            } else {
                assert!(sets[0].1.contains(&key), "{key} is used but not translated");
            }
        }
    }

    /// `data-i18n="k"`, `data-i18n-title="k"` and `t("k"` in the pages and scripts.
    fn regex_lite_keys(texts: &[&str]) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for text in texts {
            for marker in ["data-i18n=\"", "data-i18n-title=\"", "data-i18n-placeholder=\"", "t(\""] {
                for (i, _) in text.match_indices(marker) {
                    // `t("` only as the call, not the end of `split("`.
                    let before = text[..i].chars().next_back();
                    if marker == "t(\"" && before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.') {
                        continue;
                    }
                    let rest = &text[i + marker.len()..];
                    if let Some(end) = rest.find('"') {
                        out.insert(rest[..end].to_string());
                    }
                }
            }
        }
        out
    }

    #[test]
    fn every_page_renders_with_its_navigation_and_script() {
        for page in PAGES {
            let html = render(page);
            assert!(!html.contains("{{"), "{}: a placeholder is left", page.path);
            assert!(html.contains(&format!("src=\"/ui/{}\"", page.script)));
            assert!(ASSETS.iter().any(|a| a.0 == page.script), "{} has no asset", page.script);
            for other in PAGES {
                assert!(html.contains(&format!("href=\"{}\"", other.path)));
            }
        }
    }
}
