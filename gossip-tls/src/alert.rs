//! Diagnostics for TLS alerts, shared by every transport, so a
//! misconfigured member reads the same advice whichever transport it runs.

use rustls::AlertDescription;

/// A hint for an alert the peer sent in the handshake, for the error a
/// transport reports; `protocol` names what this member offered in ALPN
/// (e.g. `"gRPC (h2)"`, `"gossip/1"`).
pub fn alert_hint(alert: AlertDescription, protocol: &str) -> String {
    match alert {
        AlertDescription::NoApplicationProtocol => {
            format!("no common ALPN protocol: the peer does not speak {protocol}")
        }
        AlertDescription::CertificateRequired => {
            "the peer requires a client certificate (mutual TLS)".to_owned()
        }
        AlertDescription::UnknownCA
        | AlertDescription::BadCertificate
        | AlertDescription::UnsupportedCertificate
        | AlertDescription::CertificateUnknown
        | AlertDescription::CertificateExpired
        | AlertDescription::CertificateRevoked
        | AlertDescription::AccessDenied
        | AlertDescription::DecryptError => {
            "the peer does not accept our certificate (is it issued by the peer's CA?)".to_owned()
        }
        _ => "TLS handshake failure".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_name_the_cause() {
        assert_eq!(
            alert_hint(AlertDescription::NoApplicationProtocol, "gossip/1"),
            "no common ALPN protocol: the peer does not speak gossip/1"
        );
        assert!(alert_hint(AlertDescription::UnknownCA, "x").contains("CA"));
        assert_eq!(
            alert_hint(AlertDescription::HandshakeFailure, "x"),
            "TLS handshake failure"
        );
    }
}
