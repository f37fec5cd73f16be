//! The portal's HTML. Bots find what they need by id and class: `#user-form`, the hidden
//! `form_token` input, and the outcome of every action in `<p id="result">` with class
//! `success` or `error`.

use super::user::Profile;

/// The login form, with an error message above it after a failed attempt.
pub(crate) fn login(error: Option<&str>) -> String {
    let error = error.map(|message| result("error", message)).unwrap_or_default();
    page(
        "Log in",
        &format!(
            r#"{error}<form id="login-form" method="post" action="/login">
<label>Username <input name="username" autocomplete="username"></label>
<label>Password <input name="password" type="password" autocomplete="current-password"></label>
<button type="submit">Log in</button>
</form>"#
        ),
    )
}

/// The user form, carrying the one-use `form_token`.
pub(crate) fn user_form(form_token: &str) -> String {
    let form_token = escape(form_token);
    let options: String = Profile::ALL
        .iter()
        .map(|profile| format!("<option value=\"{0}\">{0}</option>", profile.as_str()))
        .collect();
    page(
        "New user",
        &format!(
            r#"<form id="user-form" method="post" action="/users">
<input type="hidden" name="form_token" value="{form_token}">
<label>Name <input name="name"></label>
<label>E-mail <input name="email" type="email"></label>
<label>Login <input name="login"></label>
<label>Profile <select name="profile">{options}</select></label>
<button type="submit">Create user</button>
</form>"#
        ),
    )
}

/// A page reporting the outcome of an action; `class` is `success` or `error`.
pub(crate) fn outcome(class: &str, message: &str) -> String {
    let more = if class == "success" {
        "\n<p><a href=\"/users/new\">Create another user</a></p>"
    } else {
        ""
    };
    page("Vivo360", &format!("{}{more}", result(class, message)))
}

/// The paragraph bots read the outcome from.
fn result(class: &str, message: &str) -> String {
    format!("<p class=\"{class}\" id=\"result\">{}</p>\n", escape(message))
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>{title} · Vivo360</title></head>\n<body>\n<h1>Vivo360</h1>\n{body}\n</body>\n</html>\n"
    )
}

/// `text` safe to put in HTML content or a double-quoted attribute: values come from whoever
/// fills the form. Apostrophes stay as they are, so messages about names read plainly.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_form_has_what_bots_look_for() {
        let html = user_form("abc123");
        for needle in [
            r#"<form id="user-form" method="post" action="/users">"#,
            r#"<input type="hidden" name="form_token" value="abc123">"#,
            r#"<input name="name">"#,
            r#"<input name="email" type="email">"#,
            r#"<input name="login">"#,
            r#"<select name="profile">"#,
            r#"<option value="agent">agent</option>"#,
            r#"<option value="supervisor">supervisor</option>"#,
            r#"<option value="admin">admin</option>"#,
        ] {
            assert!(html.contains(needle), "{needle} missing from {html}");
        }
    }

    #[test]
    fn outcomes_are_escaped() {
        let html = outcome("error", "Login <b>&\"x\" already exists");
        assert!(html.contains(
            r#"<p class="error" id="result">Login &lt;b&gt;&amp;&quot;x&quot; already exists</p>"#
        ));
    }
}
