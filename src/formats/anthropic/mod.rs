//! The Anthropic Messages API as a client format (`llm_format: anthropic`) in front of any
//! provider: requests are converted to the OpenAI chat format every driver reads, answers and
//! streams back to Anthropic's exact shapes. With `provider: anthropic` the native request
//! passes through instead (see [`super::native`]).

pub mod request;
pub mod response;
pub mod stream;

/// What an Anthropic-format client asked for, from its path suffix (the SDKs append these to
/// their base URL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Messages,
    CountTokens,
}

impl Operation {
    pub fn from_path(path: &str) -> Option<Operation> {
        let path = path.trim_end_matches('/');
        if path.ends_with("/v1/messages/count_tokens") {
            Some(Operation::CountTokens)
        } else if path.ends_with("/v1/messages") {
            Some(Operation::Messages)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_come_from_the_path_suffix() {
        assert_eq!(
            Operation::from_path("/claude/v1/messages"),
            Some(Operation::Messages)
        );
        assert_eq!(
            Operation::from_path("/v1/messages/"),
            Some(Operation::Messages)
        );
        assert_eq!(
            Operation::from_path("/x/v1/messages/count_tokens"),
            Some(Operation::CountTokens)
        );
        assert_eq!(Operation::from_path("/x/v1/models"), None);
        assert_eq!(Operation::from_path("/x/v1/messages/batches"), None);
    }
}
