//! Reading the Vivo360 portal's pages: small pure functions over the HTML text, so they are
//! tested without a portal. The portal marks what bots need: the hidden `form_token` input and
//! the `<p id="result">` paragraph with the outcome of every action.

/// The value of the `form_token` input of the user form.
pub fn form_token(html: &str) -> Option<String> {
    let at = html.find(r#"name="form_token""#)?;
    let tag_start = html[..at].rfind('<')?;
    let tag_end = at + html[at..].find('>')?;
    attribute(&html[tag_start..tag_end], "value")
}

/// The text of the element with `id="result"`, unescaped and trimmed.
pub fn result_text(html: &str) -> Option<String> {
    let at = html.find(r#"id="result""#)?;
    let content_start = at + html[at..].find('>')? + 1;
    let content_end = content_start + html[content_start..].find('<')?;
    Some(unescape(html[content_start..content_end].trim()))
}

/// The value of the double-quoted attribute `name` inside one tag's text.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let needle = format!(r#" {name}=""#);
    let start = tag.find(&needle)? + needle.len();
    let end = start + tag[start..].find('"')?;
    Some(unescape(&tag[start..end]))
}

/// Undoes HTML escaping of the characters a page escapes in text and attributes.
pub fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORM: &str = r#"<!DOCTYPE html>
<html><body><h1>Vivo360</h1>
<form id="user-form" method="post" action="/users">
<input type="hidden" name="form_token" value="9f2c&amp;1">
<label>Name <input name="name"></label>
</form></body></html>"#;

    #[test]
    fn finds_the_form_token_whatever_the_attribute_order() {
        assert_eq!(form_token(FORM).as_deref(), Some("9f2c&1"));
        let reordered = r#"<input value="abc" type="hidden" name="form_token" />"#;
        assert_eq!(form_token(reordered).as_deref(), Some("abc"));
        assert_eq!(form_token("<p>no form here</p>"), None);
        assert_eq!(
            form_token(r#"<input name="form_token">"#),
            None,
            "a token input without a value"
        );
    }

    #[test]
    fn reads_the_result_paragraph_unescaped() {
        let created = "<body>\n<p class=\"success\" id=\"result\">User ana.souza created</p>\n<p><a href=\"/users/new\">Create another user</a></p>";
        assert_eq!(result_text(created).as_deref(), Some("User ana.souza created"));
        let refused = r#"<p class="error" id="result">Login &lt;b&gt; &quot;x&quot; &amp; y already exists</p>"#;
        assert_eq!(result_text(refused).as_deref(), Some(r#"Login <b> "x" & y already exists"#));
        assert_eq!(result_text("<p class=\"error\">no id</p>"), None);
        assert_eq!(result_text(r#"<p id="result">unterminated"#), None);
    }
}
