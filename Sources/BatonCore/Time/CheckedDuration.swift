extension Duration {
    /// The largest number of seconds a duration setting or request field accepts: one year.
    /// Anything larger is a typo or hostile, and would overflow the conversion to a duration.
    public static let maximumSettingSeconds: Double = 31_536_000

    /// `seconds` as a duration (millisecond precision) when it is a finite number from 0 to
    /// `maximum`; nil for NaN, ±infinity, a negative or a huge number. Every duration read from
    /// input (the `config` key, a REST body, the YAML file, a CLI argument) goes through this: a
    /// plain `Int64(seconds * 1000)` traps on 1e300 and takes the whole agent down.
    public init?(checkedSeconds seconds: Double, maximum: Double = Duration.maximumSettingSeconds) {
        guard seconds.isFinite, seconds >= 0, seconds <= maximum, maximum <= 9.0e12 else { return nil }
        self = .milliseconds(Int64((seconds * 1000).rounded()))
    }
}
