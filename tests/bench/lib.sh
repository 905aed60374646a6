# lib.sh - what every benchmark shares (sourced): figures over interleaved rounds, reported as
# median (min-max), the form docs/*.md and the README quote. This machine is a shared VM where
# identical rounds differ by up to 5x, so one sample per load is never a figure.
ROUNDS=${BENCH_ROUNDS:-5}

# summary V1 V2 ...: "median (min-max)" of the numbers given
summary() {
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
		m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
		printf "%s (%s-%s)", fmt(m), fmt(v[1]), fmt(v[NR]) }
		function fmt(x) { return (x >= 100 || x <= -100) ? sprintf("%.0f", x) : sprintf("%.3g", x) }'
}

# median V1 V2 ...: the median alone
median() {
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
		printf "%g", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# ratio A B: A / B with two decimals (0 when B is 0)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }

# verdict RATIOS... : a warning when ours beat the floor in the median: then it is no floor
# for that load (docs/performance.md) and the ratio must not be claimed.
verdict() {
	awk -v m="$(median "$@")" 'BEGIN { if (m > 1) printf "  (ours beat the floor: not a floor for this load)" }'
}
