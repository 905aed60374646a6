/* fuzz_restore.c - libFuzzer target: the payload checks of stereod's restored message (field
 * types, base64 entropy, hostname, machine-id, the network object with its CIDRs, MACs and
 * routes). Only the validation runs; nothing touches the system. */
#include "applets/stereod/snapshot.c"
#include "applets/stereod/restore.c"
#include "applets/stereod/metrics.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[ERRBUF];
	struct json j;
	struct restore_req r;
	if (json_parse(&j, (const char *)data, size, true, err))
		return 0;
	if (restore_parse(&j, 0, &r, err) == SNAP_OK) {
		if (r.entropy.len > 4096 || (r.hostname[0] && !valid_hostname(r.hostname)))
			__builtin_trap();
		buf_wipe(&r.entropy);
	}
	json_free(&j);
	return 0;
}
