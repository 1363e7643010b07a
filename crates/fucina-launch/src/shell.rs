/// A word bash reads back unchanged: bare when it holds only safe characters, else single-quoted.
pub fn quote(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Words joined into one command line.
pub fn join(words: &[String]) -> String {
    words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn quoting() {
        assert_eq!(super::quote("a/b.toml"), "a/b.toml");
        assert_eq!(super::quote("it's here"), r"'it'\''s here'");
        assert_eq!(super::quote(""), "''");
        assert_eq!(super::quote("$HOME"), "'$HOME'");
    }
}
