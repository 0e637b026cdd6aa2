//! Device credentials compatible with the public Alibaba Cloud Link SDK MQTT scheme.
//!
//! - client id: `{id}|securemode=S,signmethod=M[,timestamp=T][,...]|`; extra parameters the SDK adds
//!   (`ext=1,_ss=1,lan=...,_v=...`) are accepted and not signed;
//! - user name: `{deviceName}&{productKey}`;
//! - password: hex HMAC (hmacsha256, hmacsha1, hmacmd5) keyed by the DeviceSecret over the signed
//!   parameters sorted by name and concatenated as `name value`:
//!   `clientId{id}deviceName{dn}productKey{pk}[timestamp{T}]`.
//!
//! Dynamic registration (`authType=register`) signs `deviceName{dn}productKey{pk}random{r}` with the
//! ProductSecret instead.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};

/// The HMAC flavours the Link SDK uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignMethod {
    /// `hmacsha256`
    HmacSha256,
    /// `hmacsha1`
    HmacSha1,
    /// `hmacmd5`
    HmacMd5,
}

impl SignMethod {
    /// Parses the `signmethod` parameter (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "hmacsha256" => Some(Self::HmacSha256),
            "hmacsha1" => Some(Self::HmacSha1),
            "hmacmd5" => Some(Self::HmacMd5),
            _ => None,
        }
    }

    /// The parameter value for this method.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HmacSha256 => "hmacsha256",
            Self::HmacSha1 => "hmacsha1",
            Self::HmacMd5 => "hmacmd5",
        }
    }
}

/// Why credentials could not even be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// The client id lacks the `|params|` section.
    #[error("client id is not in the form id|securemode=..,signmethod=..|")]
    NotSignedForm,
    /// `signmethod` is missing or unknown.
    #[error("unknown or missing signmethod")]
    SignMethod,
    /// The user name is not `deviceName&productKey`.
    #[error("user name is not deviceName&productKey")]
    UserName,
}

/// The parsed parameters of a signed client id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedClientId {
    /// The `{id}` part, signed as `clientId`.
    pub id: String,
    /// `securemode` (2 = TLS, 3 = plain TCP, -2 registration-free); informative only.
    pub securemode: Option<String>,
    /// The HMAC flavour.
    pub signmethod: SignMethod,
    /// Signed when present.
    pub timestamp: Option<String>,
    /// `register` for dynamic registration.
    pub auth_type: Option<String>,
    /// The nonce of dynamic registration.
    pub random: Option<String>,
}

impl SignedClientId {
    /// Parses `{id}|k=v,k=v|`. Unknown parameters are ignored, as the Link SDK adds its own.
    pub fn parse(client_id: &str) -> Result<Self, CredentialsError> {
        let (id, rest) = client_id
            .split_once('|')
            .ok_or(CredentialsError::NotSignedForm)?;
        let params = rest
            .strip_suffix('|')
            .ok_or(CredentialsError::NotSignedForm)?;
        let mut parsed = SignedClientId {
            id: id.to_owned(),
            securemode: None,
            signmethod: SignMethod::HmacSha256,
            timestamp: None,
            auth_type: None,
            random: None,
        };
        let mut method = None;
        for pair in params.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "securemode" => parsed.securemode = Some(v.to_owned()),
                "signmethod" => method = SignMethod::parse(v),
                "timestamp" => parsed.timestamp = Some(v.to_owned()),
                "authType" => parsed.auth_type = Some(v.to_owned()),
                "random" => parsed.random = Some(v.to_owned()),
                _ => {}
            }
        }
        parsed.signmethod = match method {
            Some(m) => m,
            // A device token is presented as it was handed out, not signed.
            None if parsed.is_token() => SignMethod::HmacSha256,
            None => return Err(CredentialsError::SignMethod),
        };
        Ok(parsed)
    }

    /// What a dynamic-registration request asks for (`authType=register` or `regnwl`).
    pub fn registration(&self) -> Option<Registration> {
        match self.auth_type.as_deref() {
            Some("register") => Some(Registration::Secret),
            Some("regnwl") => Some(Registration::Token),
            _ => None,
        }
    }

    /// Whether the password is a device token from registration without pre-registration
    /// (`authType=connwl`).
    pub fn is_token(&self) -> bool {
        self.auth_type.as_deref() == Some("connwl")
    }
}

/// What dynamic registration (the device proves it holds the ProductSecret) hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// `authType=register`: the DeviceSecret, on `/ext/register`.
    Secret,
    /// `authType=regnwl` (registration without pre-registration): a client id and a device
    /// token, on `/ext/regnwl`; the device then connects with them and `authType=connwl`.
    Token,
}

impl Registration {
    /// The topic the answer is published on.
    pub fn topic(self) -> &'static str {
        match self {
            Registration::Secret => "/ext/register",
            Registration::Token => "/ext/regnwl",
        }
    }
}

/// The device token handed out with `client_id` by registration without pre-registration: an
/// HMAC keyed by the DeviceSecret, so it is checked without being stored, and it goes with the
/// device.
pub fn device_token(device_secret: &str, client_id: &str) -> String {
    sign(
        SignMethod::HmacSha256,
        device_secret,
        &[("authType", "connwl"), ("clientId", client_id)],
    )
}

/// Splits `deviceName&productKey`.
pub fn parse_username(username: &str) -> Result<(&str, &str), CredentialsError> {
    match username.split_once('&') {
        Some((dn, pk)) if !dn.is_empty() && !pk.is_empty() => Ok((dn, pk)),
        _ => Err(CredentialsError::UserName),
    }
}

/// Hex HMAC of the parameters sorted by name and concatenated as `name value`.
pub fn sign(method: SignMethod, secret: &str, params: &[(&str, &str)]) -> String {
    let mut sorted: Vec<&(&str, &str)> = params.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let content: String = sorted.iter().map(|(k, v)| format!("{k}{v}")).collect();
    let key = secret.as_bytes();
    let data = content.as_bytes();
    // new_from_slice cannot fail for HMAC: any key length is valid.
    match method {
        SignMethod::HmacSha256 => {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("hmac accepts any key");
            mac.update(data);
            hex::encode(mac.finalize().into_bytes())
        }
        SignMethod::HmacSha1 => {
            let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key).expect("hmac accepts any key");
            mac.update(data);
            hex::encode(mac.finalize().into_bytes())
        }
        SignMethod::HmacMd5 => {
            let mut mac = Hmac::<md5::Md5>::new_from_slice(key).expect("hmac accepts any key");
            mac.update(data);
            hex::encode(mac.finalize().into_bytes())
        }
    }
}

/// The MQTT password a device with `device_secret` must present.
pub fn mqtt_password(
    method: SignMethod,
    device_secret: &str,
    id: &str,
    device_name: &str,
    product_key: &str,
    timestamp: Option<&str>,
) -> String {
    let mut params = vec![
        ("clientId", id),
        ("deviceName", device_name),
        ("productKey", product_key),
    ];
    if let Some(ts) = timestamp {
        params.push(("timestamp", ts));
    }
    sign(method, device_secret, &params)
}

/// The password of a dynamic-registration request, keyed by the ProductSecret.
pub fn register_password(
    method: SignMethod,
    product_secret: &str,
    device_name: &str,
    product_key: &str,
    random: &str,
) -> String {
    sign(
        method,
        product_secret,
        &[
            ("deviceName", device_name),
            ("productKey", product_key),
            ("random", random),
        ],
    )
}

/// Compares a presented hex signature with the expected one, case-insensitively and in constant
/// time with respect to the content.
pub fn signature_matches(expected_hex: &str, presented: &[u8]) -> bool {
    if expected_hex.len() != presented.len() {
        return false;
    }
    expected_hex
        .bytes()
        .zip(presented.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b.to_ascii_lowercase()))
        == 0
}

/// Everything needed to connect a device: what `ironhub device sign` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MqttCredentials {
    /// MQTT client id.
    pub client_id: String,
    /// MQTT user name.
    pub username: String,
    /// MQTT password.
    pub password: String,
}

/// Builds signed MQTT credentials for a device (hmacsha256, with a timestamp).
pub fn device_credentials(
    product_key: &str,
    device_name: &str,
    device_secret: &str,
    timestamp_ms: u64,
) -> MqttCredentials {
    let ts = timestamp_ms.to_string();
    let id = format!("{product_key}.{device_name}");
    MqttCredentials {
        client_id: format!("{id}|securemode=3,signmethod=hmacsha256,timestamp={ts}|"),
        username: format!("{device_name}&{product_key}"),
        password: mqtt_password(
            SignMethod::HmacSha256,
            device_secret,
            &id,
            device_name,
            product_key,
            Some(&ts),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_link_sdk_client_ids_with_unsigned_extras() {
        let c = SignedClientId::parse(
            "dev1|securemode=3,signmethod=hmacsha1,timestamp=789,_v=sdk-c-4.0,lan=C,_ss=1,ext=1|",
        )
        .unwrap();
        assert_eq!(c.id, "dev1");
        assert_eq!(c.signmethod, SignMethod::HmacSha1);
        assert_eq!(c.timestamp.as_deref(), Some("789"));
        assert_eq!(c.registration(), None);
        assert!(!c.is_token());
        assert_eq!(
            SignedClientId::parse("plain"),
            Err(CredentialsError::NotSignedForm)
        );
        assert_eq!(
            SignedClientId::parse("x|signmethod=rsa|"),
            Err(CredentialsError::SignMethod)
        );
    }

    #[test]
    fn registration_and_token_client_ids() {
        let r = |id: &str| SignedClientId::parse(id).unwrap().registration();
        assert_eq!(
            r("d.pk|random=x,authType=register,securemode=2,signmethod=hmacsha256|"),
            Some(Registration::Secret)
        );
        assert_eq!(
            r("d.pk|random=x,authType=regnwl,securemode=2,signmethod=hmacsha256|"),
            Some(Registration::Token)
        );
        // The Python SDK's connection with its token names no sign method.
        let token = SignedClientId::parse(
            "pk.d|authType=connwl,securemode=-2,_ss=1,ext=3,lan=Python,_v=1.2.13|",
        )
        .unwrap();
        assert!(token.is_token());
        assert_eq!(token.registration(), None);
        assert_eq!(token.id, "pk.d");
        assert_ne!(
            device_token("secret", "pk.d"),
            device_token("other", "pk.d")
        );
        assert_ne!(
            device_token("secret", "pk.d"),
            device_token("secret", "pk.e")
        );
    }

    #[test]
    fn signature_matches_known_hmac_vectors() {
        // Computed independently with `openssl dgst -<alg> -hmac secret` over the sorted content.
        let sha256 = mqtt_password(
            SignMethod::HmacSha256,
            "secret",
            "12345",
            "dev",
            "pk",
            Some("789"),
        );
        assert_eq!(
            sha256,
            "6047f2efec82763e1727d10ae9cede4e143fd4ac01aa3c0e64e65e27d5a94bbf"
        );
        let sha1 = mqtt_password(SignMethod::HmacSha1, "secret", "12345", "dev", "pk", None);
        assert_eq!(sha1, "55336bacc6d22b795bd10a274d0450abd59080d9");
        let md5 = mqtt_password(SignMethod::HmacMd5, "secret", "12345", "dev", "pk", None);
        assert_eq!(md5, "a6e9096ad2e6a7a2255ede7a13f48f67");
    }

    #[test]
    fn parameters_are_sorted_by_name() {
        let a = sign(SignMethod::HmacSha256, "k", &[("b", "2"), ("a", "1")]);
        let b = sign(SignMethod::HmacSha256, "k", &[("a", "1"), ("b", "2")]);
        assert_eq!(a, b);
    }

    #[test]
    fn comparison_ignores_case_and_rejects_other_lengths() {
        assert!(signature_matches("abcdef", b"ABCdef"));
        assert!(!signature_matches("abcdef", b"abcde"));
        assert!(!signature_matches("abcdef", b"abcdee"));
    }
}
