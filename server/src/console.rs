//! The web console: a small page and script built into the binary, served at `/console/` on the
//! admin listener. It signs in with the admin token or a tenant's API key and uses only the
//! public REST API (`/api/v1/...`), like any other client.

/// The console's files: path under `/console/`, content type, bytes.
const ASSETS: [(&str, &str, &str); 3] = [
    (
        "",
        "text/html; charset=utf-8",
        include_str!("../console/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../console/app.css"),
    ),
];

/// The content type and body of a console path (`/console/...`), if it is one of its files.
pub fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    let name = path.strip_prefix("/console/")?;
    ASSETS
        .iter()
        .find(|(n, _, _)| *n == name || (n.is_empty() && name == "index.html"))
        .map(|(_, content_type, body)| (*content_type, *body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_what_it_loads_are_served() {
        let (kind, page) = asset("/console/").expect("index");
        assert!(kind.starts_with("text/html"));
        for linked in ["/console/app.js", "/console/app.css"] {
            assert!(page.contains(linked), "the page links {linked}");
            assert!(asset(linked).is_some(), "{linked} is served");
        }
        assert!(asset("/console/missing.js").is_none());
        assert!(asset("/other").is_none());
    }
}
