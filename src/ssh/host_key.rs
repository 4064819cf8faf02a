/// How the server's host key is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyCheck {
    /// Accept only a key whose `SHA256:...` fingerprint is in the set.
    Pinned(Vec<String>),
    /// Accept any key; the session reports its fingerprint so the caller can pin it.
    TrustFirst,
}

impl HostKeyCheck {
    /// `Pinned` when there are pins, otherwise `TrustFirst`: a container whose create
    /// task log printed no fingerprints gets its first key pinned.
    pub fn from_pins(pins: Vec<String>) -> Self {
        if pins.is_empty() {
            HostKeyCheck::TrustFirst
        } else {
            HostKeyCheck::Pinned(pins)
        }
    }

    pub fn accepts(&self, fingerprint: &str) -> bool {
        match self {
            HostKeyCheck::TrustFirst => true,
            HostKeyCheck::Pinned(pins) => pins.iter().any(|pin| pin.trim() == fingerprint),
        }
    }

    pub(crate) fn pins(&self) -> Vec<String> {
        match self {
            HostKeyCheck::TrustFirst => Vec::new(),
            HostKeyCheck::Pinned(pins) => pins.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "SHA256:1q5RZRl7XCOgQgfKKRB7j05grjHF/4zxMfflqk8sLng";
    const B: &str = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";

    #[test]
    fn accepts_only_what_the_policy_allows() {
        let cases = [
            (HostKeyCheck::TrustFirst, A, true),
            (HostKeyCheck::Pinned(vec![A.into()]), A, true),
            (HostKeyCheck::Pinned(vec![B.into(), A.into()]), A, true),
            (HostKeyCheck::Pinned(vec![B.into()]), A, false),
            (HostKeyCheck::Pinned(vec![]), A, false),
            (HostKeyCheck::Pinned(vec![format!(" {A}\n")]), A, true),
            // Fingerprints are base64: case matters.
            (HostKeyCheck::Pinned(vec![A.to_lowercase()]), A, false),
        ];
        for (policy, seen, accepted) in cases {
            assert_eq!(policy.accepts(seen), accepted, "{policy:?} vs {seen}");
        }
    }

    #[test]
    fn empty_pin_set_means_trust_first() {
        assert_eq!(HostKeyCheck::from_pins(vec![]), HostKeyCheck::TrustFirst);
        assert_eq!(HostKeyCheck::from_pins(vec![A.into()]), HostKeyCheck::Pinned(vec![A.into()]));
    }
}
