//! AWS Signature Version 4 (header signing), pure: the caller passes the time.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// An AWS access key. `Debug` never shows the secret or the token.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return [0; 32],
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex_encode(&Sha256::digest(data))
}

fn hex_encode(b: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(char::from(HEX[usize::from(x >> 4)]));
        s.push(char::from(HEX[usize::from(x & 15)]));
    }
    s
}

/// URI-encodes per SigV4: unreserved characters stay, everything else is `%XX`; `/` stays when
/// `keep_slash`.
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `YYYYMMDDTHHMMSSZ` for a Unix time.
pub fn amz_date(unix_secs: u64) -> String {
    let days = i64::try_from(unix_secs / 86_400).unwrap_or(0);
    let rem = unix_secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The canonical query string of a raw query (`a=1&b=2`, already percent-encoded as sent).
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(k), false),
                uri_encode(&percent_decode(v), false),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(hi), Some(lo)) = (hex_value(b[i + 1]), hex_value(b[i + 2]))
        {
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(c: u8) -> Option<u8> {
    char::from(c)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// What a signature covers.
#[derive(Debug)]
pub struct Signing<'a> {
    pub method: &'a str,
    /// The path as sent (percent-encoded).
    pub path: &'a str,
    /// The query as sent, without `?`.
    pub query: &'a str,
    /// Every header to sign (any case); must include `host` and `x-amz-date`.
    pub headers: &'a [(String, String)],
    pub payload_sha256: &'a str,
    pub region: &'a str,
    pub service: &'a str,
    /// `YYYYMMDDTHHMMSSZ`.
    pub amz_date: &'a str,
    /// Double-encode the path (every service but S3).
    pub double_encode_path: bool,
}

/// The canonical request, the signed-headers list and the signature.
pub fn signature(s: &Signing<'_>, secret_access_key: &str) -> (String, String, String) {
    let mut headers: Vec<(String, String)> = s
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.to_ascii_lowercase(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect();
    headers.sort();
    let signed: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    let signed = signed.join(";");
    let path = if s.path.is_empty() { "/" } else { s.path };
    let uri = if s.double_encode_path {
        uri_encode(path, true)
    } else {
        path.to_owned()
    };
    let mut canonical = format!(
        "{}\n{uri}\n{}\n",
        s.method.to_ascii_uppercase(),
        canonical_query(s.query)
    );
    for (n, v) in &headers {
        canonical.push_str(n);
        canonical.push(':');
        canonical.push_str(v);
        canonical.push('\n');
    }
    canonical.push('\n');
    canonical.push_str(&signed);
    canonical.push('\n');
    canonical.push_str(s.payload_sha256);
    let date = &s.amz_date[..s.amz_date.len().min(8)];
    let scope = format!("{date}/{}/{}/aws4_request", s.region, s.service);
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
        s.amz_date,
        sha256_hex(canonical.as_bytes())
    );
    let k_date = hmac(
        format!("AWS4{secret_access_key}").as_bytes(),
        date.as_bytes(),
    );
    let k_region = hmac(&k_date, s.region.as_bytes());
    let k_service = hmac(&k_region, s.service.as_bytes());
    let k_signing = hmac(&k_service, b"aws4_request");
    let sig = hex_encode(&hmac(&k_signing, to_sign.as_bytes()));
    (canonical, signed, sig)
}

/// Signs a request: returns the headers to add (`x-amz-date`, `x-amz-content-sha256`,
/// `x-amz-security-token` when there is a session token, `authorization`). `host` is the
/// `Host` header the request will carry; `headers` the other headers to sign (content type).
#[allow(
    clippy::too_many_arguments,
    reason = "the inputs of the algorithm, each needed"
)]
pub fn sign(
    credentials: &Credentials,
    region: &str,
    service: &str,
    method: &str,
    host: &str,
    path_and_query: &str,
    headers: &[(String, String)],
    body: &[u8],
    unix_secs: u64,
) -> Vec<(String, String)> {
    let date = amz_date(unix_secs);
    let payload = sha256_hex(body);
    let mut added = vec![
        ("x-amz-date".to_owned(), date.clone()),
        ("x-amz-content-sha256".to_owned(), payload.clone()),
    ];
    if let Some(token) = &credentials.session_token {
        added.push(("x-amz-security-token".to_owned(), token.clone()));
    }
    let mut to_sign: Vec<(String, String)> = vec![("host".to_owned(), host.to_owned())];
    to_sign.extend(headers.iter().cloned());
    to_sign.extend(added.iter().cloned());
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let (_, signed, sig) = signature(
        &Signing {
            method,
            path,
            query,
            headers: &to_sign,
            payload_sha256: &payload,
            region,
            service,
            amz_date: &date,
            double_encode_path: true,
        },
        &credentials.secret_access_key,
    );
    let date_only = &date[..8];
    added.push((
        "authorization".to_owned(),
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{date_only}/{region}/{service}/aws4_request, SignedHeaders={signed}, Signature={sig}",
            credentials.access_key_id
        ),
    ));
    added
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn suite(method: &str, query: &str, extra: &[(&str, &str)], body: &[u8]) -> (String, String) {
        let mut headers: Vec<(String, String)> = extra
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        headers.push(("Host".into(), "example.amazonaws.com".into()));
        headers.push(("X-Amz-Date".into(), "20150830T123600Z".into()));
        let hash = sha256_hex(body);
        let (_, signed, sig) = signature(
            &Signing {
                method,
                path: "/",
                query,
                headers: &headers,
                payload_sha256: &hash,
                region: "us-east-1",
                service: "service",
                amz_date: "20150830T123600Z",
                double_encode_path: true,
            },
            SECRET,
        );
        (signed, sig)
    }

    /// Cases of the AWS Signature Version 4 test suite.
    #[test]
    fn matches_the_aws_test_suite() {
        assert_eq!(
            suite("POST", "Param1=value1", &[], b""),
            (
                "host;x-amz-date".into(),
                "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11".into()
            )
        );
        assert_eq!(
            suite(
                "POST",
                "",
                &[("Content-Type", "application/x-www-form-urlencoded")],
                b"Param1=value1"
            ),
            (
                "content-type;host;x-amz-date".into(),
                "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a".into()
            )
        );
    }

    #[test]
    fn dates_are_formatted_in_utc() {
        assert_eq!(amz_date(1_440_938_160), "20150830T123600Z");
        assert_eq!(amz_date(0), "19700101T000000Z");
        assert_eq!(amz_date(951_782_400), "20000229T000000Z");
    }

    #[test]
    fn paths_are_encoded_twice_and_the_header_names_the_scope() {
        let creds = Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: SECRET.into(),
            session_token: Some("token".into()),
        };
        let added = sign(
            &creds,
            "eu-west-1",
            "bedrock",
            "POST",
            "bedrock-runtime.eu-west-1.amazonaws.com",
            "/model/a%3A0/converse",
            &[("content-type".into(), "application/json".into())],
            b"{}",
            1_440_938_160,
        );
        let auth = added
            .iter()
            .find(|(n, _)| n == "authorization")
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/eu-west-1/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token, Signature="), "{auth}");
        assert!(!format!("{creds:?}").contains(SECRET));
        let (canonical, _, _) = signature(
            &Signing {
                method: "POST",
                path: "/model/a%3A0/converse",
                query: "",
                headers: &[],
                payload_sha256: "",
                region: "r",
                service: "s",
                amz_date: "20150830T123600Z",
                double_encode_path: true,
            },
            SECRET,
        );
        assert!(canonical.starts_with("POST\n/model/a%253A0/converse\n"));
    }
}
