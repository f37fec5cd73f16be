//! Self-signed certificates for the simulators, the tests and the demo: the one place Botline
//! makes certificates (rcgen), kept out of the production binaries, which read theirs from
//! files. Serving with them is `broker_config::https`.

use broker_config::https::TlsMaterial;

/// The names a self-signed certificate is made for: the loopback, by name and address.
pub const SELF_SIGNED_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Why a self-signed certificate could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot make a self-signed certificate: {0}")]
pub struct SelfSignedError(#[from] rcgen::Error);

/// A fresh self-signed certificate for [`SELF_SIGNED_NAMES`], with its key.
pub fn self_signed() -> Result<TlsMaterial, SelfSignedError> {
    let names: Vec<String> = SELF_SIGNED_NAMES.iter().map(|&name| name.to_owned()).collect();
    let certified = rcgen::generate_simple_self_signed(names)?;
    Ok(TlsMaterial {
        cert_pem: certified.cert.pem(),
        key_pem: certified.signing_key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_makes_a_server_configuration() {
        let material = self_signed().expect("generated");
        assert!(material.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(material.certificates().expect("parses").len(), 1);
        assert!(material.server_config().is_ok());
        assert_ne!(material, self_signed().expect("generated"), "each is fresh");
    }
}
