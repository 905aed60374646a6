/* config.c - set_config: the host's jcard.toml, written atomically for agentd to pick up.
 * Spec: docs/protocol.md (set_config)
 */
#include "stereod.h"
#include <fcntl.h>
#include <unistd.h>

int config_set(struct stereod *d, const char *content, size_t len, char *err)
{
	int dfd = open(d->config_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return errf(err, "opening %s: %s", d->config_dir, strerror(errno));
	int r = atomic_write_at(dfd, "jcard.toml", content, len, 0644, (uid_t)-1, (gid_t)-1);
	close(dfd);
	if (r)
		return errf(err, "writing %s/jcard.toml: %s", d->config_dir, strerror(-r));
	log_info("config written", "path=%s/jcard.toml bytes=%zu", d->config_dir, len);
	return 0;
}
