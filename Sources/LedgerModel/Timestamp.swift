// Timestamps as the ledger holds them are epoch milliseconds (Int64). On the wire a gateway may
// send either epoch milliseconds or an RFC 3339 date-time; both parse to the same instant, and the
// ledger never keeps the original text or offset.
//
// Calendar arithmetic is proleptic Gregorian over the years RFC 3339 can write (0000-9999), with
// Howard Hinnant's days-from-civil algorithms, so it needs neither Foundation nor the C library's
// time zone state.

/// Why a timestamp text was not accepted.
public struct TimestampError: Error, CustomStringConvertible, Sendable, Equatable {
    public var reason: String
    public init(reason: String) { self.reason = reason }
    public var description: String { reason }
}

public enum Timestamp {
    /// Parses either form a gateway may send: decimal epoch milliseconds (optionally negative) or
    /// an RFC 3339 date-time (see `parseRFC3339`).
    public static func parse(_ text: some StringProtocol) throws(TimestampError) -> Int64 {
        var copy = String(text)
        let result: Result<Int64, TimestampError> = copy.withUTF8 { utf8 in
            let bytes = UnsafeRawBufferPointer(utf8)
            let digitsOnly = bytes.allSatisfy(DecimalDigits.isDigit) || (bytes.first == UInt8(ascii: "-") && bytes.dropFirst().allSatisfy(DecimalDigits.isDigit))
            if digitsOnly && !bytes.isEmpty {
                guard let value = DecimalDigits.parseInt64(bytes) else {
                    return .failure(TimestampError(reason: "epoch milliseconds out of range"))
                }
                return .success(value)
            }
            return Result { () throws(TimestampError) in try parseRFC3339(bytes) }
        }
        return try result.get()
    }

    /// Parses an RFC 3339 date-time: `2026-11-24T10:15:30Z`, `2026-11-24T10:15:30.123+01:00`.
    ///
    /// - `T`/`Z` may be lowercase and the date and time may be separated by a space (RFC 3339 5.6 note).
    /// - Fractional seconds of any length are truncated (towards the past) to milliseconds.
    /// - Second 60 (a leap second) is accepted and, as in POSIX time, is the same instant as second
    ///   0 of the next minute.
    /// - Fields are range-checked, including the day against the month's length in that year;
    ///   offsets must lie within ±23:59.
    /// - Returns: epoch milliseconds.
    public static func parseRFC3339(_ bytes: UnsafeRawBufferPointer) throws(TimestampError) -> Int64 {
        var i = 0
        let n = bytes.count

        func digits(_ count: Int, _ what: String) throws(TimestampError) -> Int {
            guard i + count <= n else { throw TimestampError(reason: "expected \(count)-digit \(what) at byte \(i), found the end") }
            var value = 0
            for k in 0..<count {
                let c = bytes[i + k]
                guard DecimalDigits.isDigit(c) else {
                    throw TimestampError(reason: "expected \(count)-digit \(what) at byte \(i + k), found \(EventMessageText.byte(c))")
                }
                value = value * 10 + Int(c &- 0x30)
            }
            i += count
            return value
        }
        func separator(_ what: String, _ a: UInt8, _ b: UInt8? = nil, _ c: UInt8? = nil) throws(TimestampError) {
            guard i < n else { throw TimestampError(reason: "expected \(what) at byte \(i), found the end") }
            let found = bytes[i]
            guard found == a || found == b || found == c else {
                throw TimestampError(reason: "expected \(what) at byte \(i), found \(EventMessageText.byte(bytes[i]))")
            }
            i += 1
        }

        let year = try digits(4, "year")
        try separator("'-' after the year", UInt8(ascii: "-"))
        let month = try digits(2, "month")
        try separator("'-' after the month", UInt8(ascii: "-"))
        let day = try digits(2, "day")
        try separator("'T' between date and time", UInt8(ascii: "T"), UInt8(ascii: "t"), UInt8(ascii: " "))
        let hour = try digits(2, "hour")
        try separator("':' after the hour", UInt8(ascii: ":"))
        let minute = try digits(2, "minute")
        try separator("':' after the minute", UInt8(ascii: ":"))
        let second = try digits(2, "second")

        var millis = 0
        if i < n && bytes[i] == UInt8(ascii: ".") {
            i += 1
            let fractionStart = i
            var scale = 100
            while i < n && DecimalDigits.isDigit(bytes[i]) {
                millis += Int(bytes[i] &- 0x30) * scale
                scale /= 10
                i += 1
            }
            guard i > fractionStart else { throw TimestampError(reason: "expected a digit after '.' at byte \(fractionStart)") }
        }

        var offsetMinutes = 0
        guard i < n else { throw TimestampError(reason: "expected 'Z' or a ±hh:mm offset at byte \(i), found the end") }
        switch bytes[i] {
        case UInt8(ascii: "Z"), UInt8(ascii: "z"):
            i += 1
        case UInt8(ascii: "+"), UInt8(ascii: "-"):
            let sign = bytes[i] == UInt8(ascii: "-") ? -1 : 1
            i += 1
            let offsetHour = try digits(2, "offset hour")
            try separator("':' in the offset", UInt8(ascii: ":"))
            let offsetMinute = try digits(2, "offset minute")
            guard offsetHour <= 23 else { throw TimestampError(reason: "offset hour \(offsetHour) is out of range (00-23)") }
            guard offsetMinute <= 59 else { throw TimestampError(reason: "offset minute \(offsetMinute) is out of range (00-59)") }
            offsetMinutes = sign * (offsetHour * 60 + offsetMinute)
        default:
            throw TimestampError(reason: "expected 'Z' or a ±hh:mm offset at byte \(i), found \(EventMessageText.byte(bytes[i]))")
        }
        guard i == n else { throw TimestampError(reason: "unexpected \(EventMessageText.byte(bytes[i])) at byte \(i) after the timestamp") }

        guard (1...12).contains(month) else { throw TimestampError(reason: "month \(month) is out of range (01-12)") }
        let monthDays = daysInMonth(year: year, month: month)
        guard day >= 1 && day <= monthDays else {
            throw TimestampError(reason: "day \(day) is out of range for \(pad(year, 4))-\(pad(month, 2)) (01-\(monthDays))")
        }
        guard hour <= 23 else { throw TimestampError(reason: "hour \(hour) is out of range (00-23)") }
        guard minute <= 59 else { throw TimestampError(reason: "minute \(minute) is out of range (00-59)") }
        guard second <= 60 else { throw TimestampError(reason: "second \(second) is out of range (00-60)") }

        let days = Int64(daysFromCivil(year: year, month: month, day: day))
        let seconds = days * 86_400 + Int64(hour * 3600 + minute * 60 + second) - Int64(offsetMinutes * 60)
        return seconds * 1000 + Int64(millis)
    }

    public static func parseRFC3339(_ text: some StringProtocol) throws(TimestampError) -> Int64 {
        var copy = String(text)
        let result = copy.withUTF8 { utf8 in
            Result { () throws(TimestampError) in try parseRFC3339(UnsafeRawBufferPointer(utf8)) }
        }
        return try result.get()
    }

    /// Formats as RFC 3339 in UTC with milliseconds: `2026-11-24T09:15:30.123Z`.
    /// - Returns: nil when the instant falls outside the years 0000-9999, which RFC 3339 cannot write.
    public static func formatRFC3339(epochMilliseconds ms: Int64) -> String? {
        // Floor division so instants before 1970 land on the right day.
        let msPerDay: Int64 = 86_400_000
        var days = ms / msPerDay
        var msOfDay = ms % msPerDay
        if msOfDay < 0 { msOfDay += msPerDay; days -= 1 }
        // Outside this range the day count could not be a year 0000-9999 anyway; checking first
        // keeps the civil arithmetic far from overflow.
        guard days >= -719_528 && days <= 2_932_896 else { return nil }
        let (year, month, day) = civilFromDays(Int(days))
        guard (0...9999).contains(year) else { return nil }
        let ofDay = Int(msOfDay)
        let hour = ofDay / 3_600_000
        let minute = ofDay / 60_000 % 60
        let second = ofDay / 1000 % 60
        let millis = ofDay % 1000
        return "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(hour, 2)):\(pad(minute, 2)):\(pad(second, 2)).\(pad(millis, 3))Z"
    }

    // MARK: - Calendar

    static func isLeapYear(_ year: Int) -> Bool {
        year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
    }

    static func daysInMonth(year: Int, month: Int) -> Int {
        switch month {
        case 2: isLeapYear(year) ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date.
    static func daysFromCivil(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    static func civilFromDays(_ daysSinceEpoch: Int) -> (year: Int, month: Int, day: Int) {
        let z = daysSinceEpoch + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    private static func pad(_ value: Int, _ width: Int) -> String {
        let digits = String(value)
        return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
    }
}

/// Decimal integer text shared by the timestamp and JSON number parsers.
enum DecimalDigits {
    @inline(__always) static func isDigit(_ c: UInt8) -> Bool { c &- 0x30 < 10 }

    /// Strict decimal integer (`-?[0-9]+`: no plus sign, no spaces) that fits Int64.
    /// - Returns: nil on any other text or on overflow.
    static func parseInt64(_ bytes: UnsafeRawBufferPointer) -> Int64? {
        var i = 0
        let negative = bytes.first == UInt8(ascii: "-")
        if negative { i = 1 }
        guard i < bytes.count else { return nil }
        var magnitude: UInt64 = 0
        while i < bytes.count {
            let c = bytes[i]
            guard isDigit(c) else { return nil }
            let (shifted, o1) = magnitude.multipliedReportingOverflow(by: 10)
            let (sum, o2) = shifted.addingReportingOverflow(UInt64(c &- 0x30))
            if o1 || o2 { return nil }
            magnitude = sum
            i += 1
        }
        return int64(magnitude: magnitude, negative: negative)
    }

    /// - Returns: nil when the value does not fit Int64.
    @inline(__always) static func int64(magnitude: UInt64, negative: Bool) -> Int64? {
        if negative {
            guard magnitude <= UInt64(Int64.max) + 1 else { return nil }
            return Int64(bitPattern: 0 &- magnitude)
        }
        guard magnitude <= UInt64(Int64.max) else { return nil }
        return Int64(magnitude)
    }
}
