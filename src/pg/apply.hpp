/*
 * apply.hpp - the apply engine: a batch of Sequin records into the mapped tables, exactly once
 * per newest version, whatever the order, duplication or redelivery.
 *
 * sequin_sync.apply(), retry_dead_letters() and the background worker all go through
 * ApplyRecords; there is no second code path.
 *
 * Postgres-side code: include after the extern "C" block with postgres.h.
 */
#ifndef SEQUIN_SYNC_APPLY_HPP
#define SEQUIN_SYNC_APPLY_HPP

#include "core/json_doc.hpp"
/* core/protocol.hpp (Protocol) is included before postgres.h by the callers */

namespace sequin_sync {

namespace prep {
class Prepared;   /* core/batch_prep.hpp, included before postgres.h by the callers */
class LocatorSet;
}

/*
 * What became of one record.  The counters (ApplyCounts) say more than the status: a record the
 * version guard refused inside the set-based statement is counted as skipped but keeps status
 * Applied, because which rows a statement left alone is not worth a round trip to find out -
 * only Failed matters to the callers (retry_dead_letters removes what did not fail).
 */
enum class RecordStatus : uint8_t {
	Applied,	/* sent to the table: inserted, updated or deleted, or left alone by the version
				 * guard because the stored row is as new or newer */
	Skipped,	/* never sent: a newer version of the same id is in the batch, or a hard delete's
				 * tombstone is as new or newer */
	Failed,		/* parked: error and sqlstate say why */
};

struct RecordResult {
	RecordStatus status;
	char	   *collection;		/* NULL when the record has none (or it cannot be decoded) */
	char	   *error;
	char		sqlstate[6];
};

struct ApplyCounts {
	int64		inserted;
	int64		updated;
	int64		deleted;
	int64		skipped;
	int64		dead_lettered;
};

struct ApplyBatch {
	const char *consumer;
	Protocol	protocol;		/* v1 records or Sequin Stream messages */
	bool		retry;			/* retry_dead_letters(): records parked before (see apply.cpp,
								 * SupersedeDeadLetters) */
	TimestampTz newest_commit_at;	/* stream: newest commit_timestamp applied, 0 when none */
	json::Document *doc;
	int			nrecords;
	/*
	 * The records, nodes of doc: anything a reply's item held, so nullptr (an item without a
	 * record), null, a non-object, or a record holding strings that are not Unicode text
	 * (doc->FindBadString) - each of those is parked, and only it.
	 */
	const json::Node **records;
	RecordResult *results;		/* nrecords entries, filled by ApplyRecords */
	/*
	 * The worker's: the records' fields and column nodes, found ahead by the prefetch thread
	 * (nullptr: none, as for apply() and retry_dead_letters()); and where ApplyRecords leaves
	 * its mappings' locators for the next prefetch (nullptr: nowhere).
	 */
	const prep::Prepared *prepared;
	prep::LocatorSet *locators_out;
	ApplyCounts counts;
	MemoryContext cxt;			/* everything of the batch is allocated here */
};

/*
 * A Document on the C++ heap, deleted when cxt is reset or deleted - also when an error unwinds
 * the stack - so no destructor ever depends on a longjmp.
 */
json::Document *NewDocument(MemoryContext cxt);

/* Prepares batch->results for the records; call before ApplyRecords. */
void InitBatch(ApplyBatch *batch, const char *consumer, Protocol protocol, json::Document *doc,
			   const json::Node **records, int nrecords, MemoryContext cxt);

/*
 * Applies the batch inside the current transaction.  Must be called with SPI connected, as the
 * extension owner, with a safe search_path; target tables are written as each mapping's owner.
 * Records that cannot be applied get status Failed (they are not written anywhere yet); every
 * other record is applied or skipped.  Errors that are no record's fault are raised.
 */
void ApplyRecords(ApplyBatch *batch);

/* Parks the batch's failed records in sequin_sync.dead_letters and counts them. */
void WriteDeadLetters(ApplyBatch *batch);

/* Deletes tombstones older than sequin_sync.tombstone_retention; returns how many. */
int64 PruneTombstones();

} /* namespace sequin_sync */

#endif
