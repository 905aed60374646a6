/* fuzz_stereod_payloads.c - libFuzzer target: stereod's payload decoders and the checks that
 * guard the file system (secret names and modes, SSH key validation, mount fs types, tags and
 * guest paths). Only the pure checks run: nothing is written, mounted or looked up. */
#include "applets/stereod/secrets.c"
#include "applets/stereod/sshkeys.c"
#include "applets/stereod/mounts.c"
#include "applets/stereod/users.c"

/* Reached only past the checks, which this target never passes on to. */
int run_sh(const char *cmd, const char *const *args, int timeout_ms, char *err) { abort(); }
int jobs_run(struct jobs *j, job_fn work, job_fn done, void *ctx) { abort(); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct mounts mt;
	char err[ERRBUF], clean[PATH_MAX];
	struct json j;
	if (json_parse(&j, (const char *)data, size, true, err))
		return 0;
	struct secret_req s = {0};
	if (!secret_decode(&j, 0, &s, err) && !valid_file_name(buf_cstr(&s.name), s.name.len, err)) {
		if (strchr(buf_cstr(&s.name), '/') || !strcmp(s.name.p, "..") || s.name.len > 255)
			__builtin_trap();
	}
	secret_req_free(&s);
	struct sshkey_req k = {0};
	size_t klen;
	if (!sshkey_decode(&j, 0, &k, err) && !check_key(&k.key, &klen, err)) {
		if (klen > k.key.len || memchr(k.key.p, '\n', klen))
			__builtin_trap();
		key_identity(k.key.p, klen);
	}
	sshkey_req_free(&k);
	struct mount_req m = {0};
	if (!mount_decode(&j, 0, &m, err) && !mount_check(&mt, &m, clean, err)) {
		if (clean[0] != '/' || strstr(clean, "/../") || path_within(clean, "/etc") ||
		    path_within(clean, "/proc") || !strcmp(clean, "/"))
			__builtin_trap();
	}
	mount_req_free(&m);
	json_free(&j);
	return 0;
}
