/* fuzz_json.c - libFuzzer target: the strict validator, jsmn tokens, every getter, unescape
 * and a writer round trip (what json_quote writes must validate). */
#include "common/stereo.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[ERRBUF];
	struct json j;
	struct buf s = {0}, q = {0};
	if (!json_parse(&j, (const char *)data, size, false, err)) {
		for (int i = 0; i < j.ntok; i++) {
			uint64_t u;
			int64_t v;
			bool b;
			json_u64(&j, i, &u);
			json_i64(&j, i, &v);
			json_bool(&j, i, &b);
			if (json_kind(&j, i) == JSON_STRING && json_str(&j, i, &s, JSON_STR_NO_NUL, err) == 0) {
				q.len = 0;
				json_quote(&q, s.p ? s.p : "", s.len);
				if (json_validate(q.p, q.len, err))
					__builtin_trap();
			}
			json_get(&j, i, "type");
			json_array_item(&j, i, 1);
		}
		json_free(&j);
	}
	q.len = 0;
	json_quote(&q, (const char *)data, size);   /* any bytes must quote to valid JSON */
	if (json_validate(q.p, q.len, err))
		__builtin_trap();
	buf_free(&s);
	buf_free(&q);
	return 0;
}
