// The one file that calls liblz4. Return codes are checked; failures become StorageError.
import CLZ4

public enum LZ4 {
    public static func compressBound(_ count: Int) -> Int { Int(LZ4_compressBound(Int32(count))) }

    /// - Returns: the compressed bytes (LZ4 block format, no frame).
    public static func compress(_ input: UnsafeRawBufferPointer) throws(StorageError) -> [UInt8] {
        guard input.count <= Int(LZ4_MAX_INPUT_SIZE) else { throw StorageError.invalidArgument("LZ4 input of \(input.count) bytes is too large") }
        let bound = compressBound(input.count)
        var out = [UInt8](repeating: 0, count: bound)
        let written = out.withUnsafeMutableBytes { dst in
            LZ4_compress_default(input.baseAddress?.assumingMemoryBound(to: CChar.self),
                                 dst.baseAddress!.assumingMemoryBound(to: CChar.self), Int32(input.count), Int32(bound))
        }
        guard written > 0 || input.count == 0 else { throw StorageError.invalidArgument("LZ4_compress_default failed") }
        out.removeLast(bound - Int(written))
        return out
    }

    /// Decompresses into `output`, whose size must be exactly the original size.
    /// - Returns: false when the input is malformed or does not fill `output` exactly.
    public static func decompress(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) -> Bool {
        if output.count == 0 { return input.count == 0 || (input.count == 1 && input[0] == 0) }
        guard input.count > 0, input.count <= Int(Int32.max), output.count <= Int(Int32.max) else { return false }
        // LZ4_decompress_safe never writes outside `output` and rejects malformed input: it is
        // the entry point meant for untrusted bytes.
        let n = LZ4_decompress_safe(input.baseAddress!.assumingMemoryBound(to: CChar.self),
                                    output.baseAddress!.assumingMemoryBound(to: CChar.self),
                                    Int32(input.count), Int32(output.count))
        return Int(n) == output.count
    }
}
