//! The little XML the tests read from Azure's and AWS's query APIs (List Blobs, stored access
//! policies, IAM answers): elements found by tag name, with entity handling left to quick-xml's
//! escape module. One place, so the Azurite admin, moto's API client and the Terraform suite
//! read answers the same way.

/// The raw inner XML of every `<tag>...</tag>` (the tag without attributes, not nested in
/// itself), in document order: still escaped, so it can be searched again for inner tags.
pub fn elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else {
            break;
        };
        out.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    out
}

/// The text of every `<tag>...</tag>`, unescaped (`&amp;`, `&#39;`, ...).
pub fn texts(xml: &str, tag: &str) -> Vec<String> {
    elements(xml, tag).into_iter().map(unescape).collect()
}

/// The text of the first `<tag>...</tag>`, unescaped.
pub fn first(xml: &str, tag: &str) -> Option<String> {
    elements(xml, tag).first().map(|s| unescape(s))
}

/// `s` with XML's entities and character references resolved (kept as is if malformed).
pub fn unescape(s: &str) -> String {
    quick_xml::escape::unescape(s)
        .map(|c| c.into_owned())
        .unwrap_or_else(|_| s.to_string())
}

/// `s` escaped for element text or an attribute value.
pub fn escape(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_elements_and_entities() {
        let xml = "<A><SignedIdentifier><Id>x&amp;y</Id></SignedIdentifier><SignedIdentifier><Id>z&#39;</Id></SignedIdentifier></A>";
        let ids: Vec<String> = elements(xml, "SignedIdentifier")
            .iter()
            .filter_map(|s| first(s, "Id"))
            .collect();
        assert_eq!(ids, ["x&y", "z'"]);
        assert_eq!(texts("<a><b>1</b><b>&lt;2&gt;</b></a>", "b"), ["1", "<2>"]);
        assert_eq!(escape("a<&>\"'"), "a&lt;&amp;&gt;&quot;&apos;");
        assert_eq!(unescape(&escape("a<&>\"'")), "a<&>\"'");
    }
}
