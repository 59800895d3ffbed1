//! Mutual authentication of a connection: an HMAC-SHA256 challenge in both directions, as
//! Python's `multiprocessing.connection` does, with the client's challenge answered first.
//!
//! The secret (32 random bytes, carried in every handle) never travels on a socket. The
//! exchange, after the server checked the peer's uid at `accept`:
//!
//! 1. client -> server `Hello { nonce: nc }` (32 fresh random bytes);
//! 2. server -> client `Challenge { nonce: ns, proof: HMAC(secret, SERVER | nc | ns) }`;
//! 3. the client checks the proof; a server that does not know the secret gets nothing more
//!    (the client closes: `Disconnected`);
//! 4. client -> server `Proof { proof: HMAC(secret, CLIENT | ns | nc) }`;
//! 5. the server checks it and answers `Done`, or closes.
//!
//! The two labels keep one side's proof from being replayed as the other's, and each side's
//! fresh nonce keeps an old proof from being replayed at all. A client answers only after the
//! server proved itself, so an impostor listening at a manager's old name learns nothing it
//! could use.
//!
//! This module must never touch a socket: it computes and checks proofs.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The secret shared by a manager and every handle to it.
pub(crate) type Secret = [u8; 32];
/// A fresh random challenge.
pub(crate) type Nonce = [u8; 32];
/// An HMAC-SHA256 tag.
pub(crate) type Proof = [u8; 32];

const SERVER: &[u8] = b"stealpool-manager server proof";
const CLIENT: &[u8] = b"stealpool-manager client proof";

/// `N` bytes from the kernel's random source.
pub(crate) fn random<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(bytes)
}

fn mac(secret: &Secret, label: &[u8], first: &Nonce, second: &Nonce) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(label);
    mac.update(first);
    mac.update(second);
    mac
}

/// The server's proof for the client's nonce `nc` and its own `ns`.
pub(crate) fn server_proof(secret: &Secret, nc: &Nonce, ns: &Nonce) -> Proof {
    mac(secret, SERVER, nc, ns).finalize().into_bytes().into()
}

/// Whether `proof` is the server's proof (compared in constant time).
pub(crate) fn check_server(secret: &Secret, nc: &Nonce, ns: &Nonce, proof: &Proof) -> bool {
    mac(secret, SERVER, nc, ns).verify_slice(proof).is_ok()
}

/// The client's proof, given after the server's was checked.
pub(crate) fn client_proof(secret: &Secret, ns: &Nonce, nc: &Nonce) -> Proof {
    mac(secret, CLIENT, ns, nc).finalize().into_bytes().into()
}

/// Whether `proof` is the client's proof (compared in constant time).
pub(crate) fn check_client(secret: &Secret, ns: &Nonce, nc: &Nonce, proof: &Proof) -> bool {
    mac(secret, CLIENT, ns, nc).verify_slice(proof).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_need_the_secret_and_are_not_interchangeable() {
        let secret: Secret = random().unwrap();
        let (nc, ns): (Nonce, Nonce) = (random().unwrap(), random().unwrap());
        let server = server_proof(&secret, &nc, &ns);
        assert!(check_server(&secret, &nc, &ns, &server));
        assert!(!check_server(&random().unwrap(), &nc, &ns, &server), "another secret");
        assert!(!check_server(&secret, &ns, &nc, &server), "nonces swapped");
        let client = client_proof(&secret, &ns, &nc);
        assert!(check_client(&secret, &ns, &nc, &client));
        assert!(!check_client(&secret, &ns, &nc, &server), "a server proof is no client proof");
        assert!(!check_server(&secret, &nc, &ns, &client), "nor the other way round");
        assert_ne!(random::<32>().unwrap(), random::<32>().unwrap());
    }
}
