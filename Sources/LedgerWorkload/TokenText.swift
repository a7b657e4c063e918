// Text forms of generated identifiers: jti-style token ids, request ids, and raw JWTs.

enum TokenText {
    private static let base64URLAlphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

    /// A token id in the one format the workload uses: 16 random bytes as 22 characters of
    /// unpadded base64url, the shape of most gateways' `jti`.
    static func tokenID(_ rng: inout Xoshiro256StarStar) -> String {
        let a = rng.next(), b = rng.next()
        // Bytes are taken by shifting, not by reinterpreting memory, so the id is the same on
        // machines of either byte order.
        @inline(__always) func byte(_ i: Int) -> UInt32 {
            UInt32(truncatingIfNeeded: (i < 8 ? a >> UInt64(8 * i) : b >> UInt64(8 * (i - 8))) & 0xFF)
        }
        return String(unsafeUninitializedCapacity: 22) { out in
            var o = 0
            var i = 0
            while i < 15 {
                let v = byte(i) << 16 | byte(i + 1) << 8 | byte(i + 2)
                out[o] = base64URLAlphabet[Int(v >> 18)]
                out[o + 1] = base64URLAlphabet[Int(v >> 12 & 63)]
                out[o + 2] = base64URLAlphabet[Int(v >> 6 & 63)]
                out[o + 3] = base64URLAlphabet[Int(v & 63)]
                o += 4
                i += 3
            }
            let last = byte(15)
            out[o] = base64URLAlphabet[Int(last >> 2)]
            out[o + 1] = base64URLAlphabet[Int(last & 3) << 4]
            return 22
        }
    }

    /// 32 lowercase hex digits, the shape of a W3C trace id that gateways log as request id.
    static func requestID(_ rng: inout Xoshiro256StarStar) -> String {
        let a = rng.next(), b = rng.next()
        return String(unsafeUninitializedCapacity: 32) { out in
            for i in 0..<16 {
                let nibble = Int(truncatingIfNeeded: a >> UInt64(60 - 4 * i)) & 15
                out[i] = hexDigits[nibble]
                out[16 + i] = hexDigits[Int(truncatingIfNeeded: b >> UInt64(60 - 4 * i)) & 15]
            }
            return 32
        }
    }

    static func base64URL(_ bytes: [UInt8]) -> String {
        var out = [UInt8]()
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i + 3 <= bytes.count {
            let v = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
            out.append(base64URLAlphabet[Int(v >> 18)])
            out.append(base64URLAlphabet[Int(v >> 12 & 63)])
            out.append(base64URLAlphabet[Int(v >> 6 & 63)])
            out.append(base64URLAlphabet[Int(v & 63)])
            i += 3
        }
        let rest = bytes.count - i
        if rest == 1 {
            let v = UInt32(bytes[i]) << 16
            out.append(base64URLAlphabet[Int(v >> 18)])
            out.append(base64URLAlphabet[Int(v >> 12 & 63)])
        } else if rest == 2 {
            let v = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8
            out.append(base64URLAlphabet[Int(v >> 18)])
            out.append(base64URLAlphabet[Int(v >> 12 & 63)])
            out.append(base64URLAlphabet[Int(v >> 6 & 63)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// A bearer token as some gateways log it by mistake: a compact RS256 JWT whose header and
    /// claims decode to plausible JSON and whose signature has the 256-byte length of an RSA-2048
    /// signature. Downstream must fingerprint it (PRODUCT.md: a raw bearer token is never stored).
    static func rawJWT(jti: String, iss: String, sub: String, aud: String, clientID: String, scope: String,
                       issuedAtMs: Int64, lifetimeMs: Int64, rng: inout Xoshiro256StarStar) -> String {
        let header = #"{"alg":"RS256","kid":"auth-2026-11","typ":"JWT"}"#
        let iat = issuedAtMs / 1000
        let exp = (issuedAtMs + lifetimeMs) / 1000
        let claims = #"{"iss":"\#(iss)","sub":"\#(sub)","aud":"\#(aud)","exp":\#(exp),"iat":\#(iat),"jti":"\#(jti)","client_id":"\#(clientID)","scope":"\#(scope)"}"#
        var signature = [UInt8]()
        signature.reserveCapacity(256)
        for _ in 0..<32 {
            let word = rng.next()
            for k in 0..<8 { signature.append(UInt8(truncatingIfNeeded: word >> UInt64(8 * k))) }
        }
        return base64URL(Array(header.utf8)) + "." + base64URL(Array(claims.utf8)) + "." + base64URL(signature)
    }
}
