/*
 * apply.cpp - the apply engine (see apply.hpp).
 *
 * A batch goes through these steps:
 *  1. validate each record (it can be decoded, its standard fields) and find its mapping by
 *     collection;
 *  2. per mapping, sort by id and keep only the newest version of each id (in-batch reduction:
 *     an upsert never touches a row twice, and older versions are counted as skipped);
 *  3. resolve the mapping against the catalog (kept across batches until the catalog changes:
 *     ResolveMappingCached), find each record's data fields in one walk (the mapping's
 *     FieldMatcher), convert every value with the column type's input function - in one
 *     subtransaction, restarted after a record that fails, so a bad value costs only its record;
 *  4. hard deletes: lock the keys (advisory, in id order), drop versions older than a tombstone;
 *  5. one set-based statement per mapping and kind - INSERT ... SELECT FROM unnest(typed arrays)
 *     ON CONFLICT (id) DO UPDATE ... WHERE stored updated_idx < incoming; the same with the
 *     standard columns only for soft deletes without data (their data columns stay as they
 *     are); and for hard deletes DELETE ... USING unnest(...) plus tombstones - each in a
 *     subtransaction, each a SELECT over data-modifying CTEs without subquery expressions, so
 *     that Citus tables work too (BuildUpsert says why).  A statement that fails is bisected
 *     down to the records that fail alone, which are parked.
 *
 * Rows are processed in id order, so concurrent batches lock rows in the same order and do
 * not deadlock each other.
 *
 * Boundary note: this file is compiled with -fno-exceptions and holds no C++ object with a
 * destructor on the stack; the Document is owned by a memory context callback.
 */
#include <new>
#include <string_view>

#include "core/batch_prep.hpp"
#include "core/json_doc.hpp"
#include "core/protocol.hpp"
#include "core/record.hpp"
#include "core/stream_message.hpp"

extern "C" {
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
}

#include "pg/apply.hpp"
#include "pg/owned.hpp"
#include "pg/spi.hpp"
#include "pg/security.hpp"
#include "pg/subxact.hpp"
#include "pg/mapping.hpp"
#include "pg/convert.hpp"
#include "pg/settings.hpp"

namespace sequin_sync {

namespace {

/*
 * One record of the batch, as the engine sees it after validation.  A Sequin Stream message is
 * one too: its "record" plays v1's "data", its key fields v1's id, its (commit_lsn, commit_idx)
 * v1's updated_idx.
 */
struct Rec {
	int			index;			/* into batch->records / results */
	const json::Node *node;		/* v1: the record; stream: the message */
	const char *id;				/* what in-batch reduction groups by: v1's id, a stream */
	uint32		id_len;			/* message's key fields' JSON texts */
	bool		has_version;	/* false only for a stream read */
	/*
	 * The version: v1's updated_idx in idx; a stream change's (commit_lsn, commit_idx), which is
	 * commit_lsn * 2^32 + commit_idx.  Not one __int128: Rec arrays come from palloc, which
	 * aligns to 8 bytes, and a 16-byte member would be accessed misaligned.
	 */
	int64		idx;
	uint64		lsn;
	uint32		lsn_idx;
	bool		deleted;
	bool		read;			/* stream: a backfill read */
	bool		synthetic;		/* stream: the delete of an update's old key (shares index) */
	bool		update;			/* stream: an update (may keep unchanged TOAST values) */
	bool		dropped;		/* skipped, or parked: no longer sent */
	bool		keeps_toast;	/* stream: an update with "unchanged_toast" values */
	int			round;			/* stream: applied after the records of earlier rounds (Reduce) */
	Datum	   *values;			/* per mapped column, after conversion */
	bool	   *nulls;
	bool	   *unchanged;		/* stream updates: the columns sent as "unchanged_toast", whose
								 * stored value is kept; nullptr when none */
	char	   *key_text;		/* hard deletes: the key as its columns print it */
	const json::Node *data;		/* v1: the record's "data" object; stream: the "record" of a
								 * message that is not a delete; nullptr when absent */
	const json::Node *record;	/* stream: the message's "record" */
	const json::Node *changes;	/* stream: its "changes", nullptr when null */
	const json::Node **key_nodes;	/* stream: the key columns' values, by key slot */
	std::string_view commit_timestamp;	/* stream changes: metadata.commit_timestamp */
};

/* All records of one mapping. */
struct Group {
	char	   *collection;
	Oid			relid;
	char	   *delete_mode;
	Jsonb	   *columns;
	Oid			owner;
	ResolvedMapping *map;
	int			nrecs;
	int			cap;
	Rec		  **recs;
};

struct Engine {
	ApplyBatch *batch;
	bool		stream;			/* the consumer speaks Sequin Stream */
	int			ngroups;
	Group	   *groups;
	Rec		   *recs;
	int			nrecs;			/* batch->nrecords, plus the synthetic deletes */
	record::ArrayLiteralWriter *literals;	/* owned by batch->cxt */
};

void
Fail(Engine *e, int index, int sqlerrcode, const char *message)
{
	RecordResult *r = &e->batch->results[index];
	r->status = RecordStatus::Failed;
	r->error = MemoryContextStrdup(e->batch->cxt, message);
	strlcpy(r->sqlstate, unpack_sql_state(sqlerrcode), sizeof(r->sqlstate));
}

/* An error as a dead letter shows it: the message, then the detail in parentheses. */
const char *
ErrorText(const ErrorData *err)
{
	if (err->detail == nullptr)
		return err->message;
	return psprintf("%s (%s)", err->message, err->detail);
}

void
Skip(Engine *e, int index)
{
	e->batch->results[index].status = RecordStatus::Skipped;
	e->batch->counts.skipped++;
}

/* A record that is not sent; the synthetic delete of a key change only drops out. */
void
SkipRec(Engine *e, Rec *r)
{
	r->dropped = true;
	if (!r->synthetic)
		Skip(e, r->index);
}

/* ---- step 1: mappings and record validation ---- */

void
LoadMappings(Engine *e)
{
	Oid argtypes[1] = {TEXTOID};
	Datum values[1] = {CStringGetTextDatum(e->batch->consumer)};
	SpiExecCached("SELECT collection, target::pg_catalog.oid, delete_mode, columns, owner::pg_catalog.oid "
			"FROM sequin_sync.mappings WHERE consumer = $1 ORDER BY target::pg_catalog.oid, collection",
			1, argtypes, values, nullptr, true, 0);
	e->ngroups = (int) SPI_processed;
	e->groups = (Group *) palloc0(sizeof(Group) * Max(e->ngroups, 1));
	for (int i = 0; i < e->ngroups; i++) {
		HeapTuple tup = SPI_tuptable->vals[i];
		TupleDesc desc = SPI_tuptable->tupdesc;
		bool isnull;
		Group *g = &e->groups[i];
		g->collection = TextDatumGetCString(SPI_getbinval(tup, desc, 1, &isnull));
		g->relid = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));
		g->delete_mode = TextDatumGetCString(SPI_getbinval(tup, desc, 3, &isnull));
		g->columns = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 4, &isnull));
		g->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 5, &isnull));
	}
}

Group *
FindGroup(Engine *e, const char *collection, uint32 len)
{
	if (collection == nullptr)
		return nullptr;
	for (int i = 0; i < e->ngroups; i++)
		if (strlen(e->groups[i].collection) == len && memcmp(e->groups[i].collection, collection, len) == 0)
			return &e->groups[i];
	return nullptr;
}

void
AddToGroup(Group *g, Rec *r)
{
	if (g->nrecs == g->cap) {
		g->cap = g->cap ? g->cap * 2 : 64;
		g->recs = g->recs ? (Rec **) repalloc(g->recs, sizeof(*g->recs) * g->cap)
						  : (Rec **) palloc(sizeof(*g->recs) * g->cap);
	}
	g->recs[g->nrecs++] = r;
}

/*
 * A Sequin Stream message: decodable, its fields (stream_message.cpp), its collection
 * "<table_schema>.<table_name>" mapped.  Filed under its mapping; the key and a key change are
 * found once the mapping is resolved (PrepareStream).
 */
void
ValidateMessage(Engine *e, Rec *r)
{
	int i = r->index;
	json::Document *doc = e->batch->doc;
	/* the prefetch thread checked it already, the same way (core/batch_prep.hpp) */
	const prep::Prepared *pre = e->batch->prepared;
	bool prepared = pre != nullptr && pre->Ready() && pre->Stream() && (size_t) i < pre->Count();
	stream::Message msg;
	stream::MessageError err = prepared ? pre->MessageError(i) : stream::ValidateMessage(*doc, r->node, &msg);
	if (prepared)
		msg = pre->Message(i);
	const json::BadString *bad = err != stream::MessageError::NotObject ? doc->FindBadString(r->node) : nullptr;
	if (!msg.schema.empty() && bad == nullptr)
		e->batch->results[i].collection =
			MemoryContextStrdup(e->batch->cxt, psprintf("%.*s.%.*s", (int) msg.schema.size(), msg.schema.data(),
														(int) msg.table.size(), msg.table.data()));
	if (bad != nullptr) {
		Fail(e, i, ERRCODE_CHARACTER_NOT_IN_REPERTOIRE, psprintf("message cannot be decoded: %s", bad->message));
		return;
	}
	if (err != stream::MessageError::None) {
		Fail(e, i, ERRCODE_INVALID_PARAMETER_VALUE, stream::MessageErrorMessage(err));
		return;
	}
	r->has_version = msg.has_version;
	r->lsn = msg.commit_lsn;
	r->lsn_idx = msg.commit_idx;
	r->deleted = msg.action == stream::Action::Delete;
	r->read = msg.action == stream::Action::Read;
	r->update = msg.action == stream::Action::Update;
	r->record = msg.record;
	r->data = r->deleted ? nullptr : msg.record;
	r->changes = msg.action == stream::Action::Update ? msg.changes : nullptr;
	r->commit_timestamp = msg.commit_timestamp;
	const char *coll = e->batch->results[i].collection;
	Group *g = FindGroup(e, coll, strlen(coll));
	if (g == nullptr) {
		Fail(e, i, ERRCODE_UNDEFINED_OBJECT,
			 psprintf("collection \"%s\" is not mapped for consumer \"%s\"", coll, e->batch->consumer));
		return;
	}
	AddToGroup(g, r);
}

/*
 * Checks that the record can be decoded and has the standard fields every record needs
 * (record.cpp), and files it under its mapping.
 */
void
ValidateRecord(Engine *e, int i)
{
	Rec *r = &e->recs[i];
	r->index = i;
	r->node = e->batch->records[i];
	json::Document *doc = e->batch->doc;

	if (r->node == nullptr) {
		Fail(e, i, ERRCODE_INVALID_PARAMETER_VALUE, e->stream ? "item has no \"data\"" : "item has no \"record\"");
		return;
	}
	if (e->stream) {
		ValidateMessage(e, r);
		return;
	}
	/* the prefetch thread checked them already, the same way (core/batch_prep.hpp) */
	const prep::Prepared *pre = e->batch->prepared;
	bool prepared = pre != nullptr && pre->Ready() && !pre->Stream() && (size_t) i < pre->Count();
	record::Fields f;
	record::FieldError err = prepared ? pre->Error(i) : record::ValidateFields(*doc, r->node, &f);
	if (prepared)
		f = pre->Fields(i);
	/* A record that is not Unicode text is parked whole: nothing of it is stored, nor trusted. */
	const json::BadString *bad = err != record::FieldError::NotObject ? doc->FindBadString(r->node) : nullptr;
	if (f.collection != nullptr && bad == nullptr) {
		char *coll = (char *) MemoryContextAlloc(e->batch->cxt, f.collection_len + 1);
		memcpy(coll, f.collection, f.collection_len);
		coll[f.collection_len] = '\0';
		e->batch->results[i].collection = coll;
	}
	if (bad != nullptr) {
		Fail(e, i, ERRCODE_CHARACTER_NOT_IN_REPERTOIRE, psprintf("record cannot be decoded: %s", bad->message));
		return;
	}
	if (err != record::FieldError::None) {
		Fail(e, i, ERRCODE_INVALID_PARAMETER_VALUE, record::FieldErrorMessage(err));
		return;
	}
	r->id = f.id;
	r->id_len = f.id_len;
	r->has_version = true;
	r->idx = f.updated_idx;
	r->deleted = f.deleted;
	r->data = f.data;

	Group *g = FindGroup(e, f.collection, f.collection_len);
	if (g == nullptr) {
		Fail(e, i, ERRCODE_UNDEFINED_OBJECT,
			 psprintf("collection \"%s\" is not mapped for consumer \"%s\"",
					  e->batch->results[i].collection, e->batch->consumer));
		return;
	}
	AddToGroup(g, r);
}

/* ---- step 2: in-batch reduction ---- */

/* By id, then newest version first, then batch order: the first of each id wins. */
int
CompareRecs(const void *a, const void *b)
{
	const Rec *ra = *(const Rec *const *) a;
	const Rec *rb = *(const Rec *const *) b;
	int c = memcmp(ra->id, rb->id, Min(ra->id_len, rb->id_len));
	if (c != 0)
		return c;
	if (ra->id_len != rb->id_len)
		return ra->id_len < rb->id_len ? -1 : 1;
	/* versioned first (a change beats a read), then the newest; of two reads, the later */
	if (ra->has_version != rb->has_version)
		return ra->has_version ? -1 : 1;
	if (ra->idx != rb->idx)
		return ra->idx > rb->idx ? -1 : 1;
	if (ra->lsn != rb->lsn)
		return ra->lsn > rb->lsn ? -1 : 1;
	if (ra->lsn_idx != rb->lsn_idx)
		return ra->lsn_idx > rb->lsn_idx ? -1 : 1;
	if (!ra->has_version)
		return ra->index > rb->index ? -1 : (ra->index < rb->index ? 1 : 0);
	return ra->index < rb->index ? -1 : (ra->index > rb->index ? 1 : 0);
}

bool
SameKey(const Rec *a, const Rec *b)
{
	return a->id_len == b->id_len && memcmp(a->id, b->id, a->id_len) == 0;
}

/*
 * Keeps the newest version of each key and skips the older ones: an upsert never touches a row
 * twice.  Except under a stream update that keeps unchanged TOAST values: those values are the
 * ones of the version before it, which may be in the same batch (apply() and retried dead letters
 * take any array; Sequin never sends two of a row in one batch).  Then the versions down to the
 * newest one that carries every value are kept too, oldest first, each in a round of its own
 * (round 0 holds everything else), and the rounds are applied one after the other: as if the
 * messages had come one at a time.  Returns the number of rounds.
 */
/* Versions of one key applied one after the other in a batch, at most (see Reduce). */
constexpr int kMaxChain = 64;

int
Reduce(Engine *e, Group *g)
{
	if (g->nrecs == 0)
		return 0;
	qsort(g->recs, g->nrecs, sizeof(*g->recs), CompareRecs);
	int kept = 0, rounds = 1;
	for (int i = 0; i < g->nrecs;) {
		int end = i + 1;
		while (end < g->nrecs && SameKey(g->recs[i], g->recs[end]))
			end++;
		/* newest first: g->recs[i] and, under updates that keep TOAST values, the ones before */
		int chain = 1;
		while (i + chain < end && g->recs[i + chain - 1]->keeps_toast)
			chain++;
		Rec *newest_first[kMaxChain];
		chain = Min(chain, kMaxChain);
		memcpy(newest_first, &g->recs[i], sizeof(Rec *) * chain);
		for (int k = 0; k < chain; k++) {
			Rec *r = newest_first[chain - 1 - k]; /* oldest first */
			r->round = k;
			g->recs[kept++] = r;
		}
		rounds = Max(rounds, chain);
		for (int k = i + chain; k < end; k++)
			SkipRec(e, g->recs[k]);
		i = end;
	}
	g->nrecs = kept;
	return rounds;
}

/*
 * Drops the records of a group that are no longer sent: skipped, or parked.  A message's two
 * records (an update that changes its key: the upsert and the old key's delete) are skipped
 * each on its own - the new key's row may be newer while the old key's delete must still happen
 * - but parked together.
 */
void
Compact(Engine *e, Group *g)
{
	int kept = 0;
	for (int i = 0; i < g->nrecs; i++)
		if (!g->recs[i]->dropped && e->batch->results[g->recs[i]->index].status != RecordStatus::Failed)
			g->recs[kept++] = g->recs[i];
	g->nrecs = kept;
}

/* ---- step 3: resolve and convert ---- */

struct ResolveArg {
	Engine	   *engine;
	Group	   *group;
	MemoryContext cxt;			/* the batch's */
};

void
ResolveStep(void *p)
{
	ResolveArg *a = (ResolveArg *) p;
	a->group->map = ResolveMappingCached(a->group->relid, a->engine->batch->protocol, a->group->delete_mode,
										 a->group->columns, a->group->owner, a->cxt);
}

struct ConvertArg {
	Engine	   *engine;
	Group	   *group;
	int			pos;			/* the record being converted; survives a longjmp (memory) */
	int			col;			/* the column being converted */
	const json::Node **fields;	/* the record's data fields, by MappedColumn::field_slot */
};

bool
e_stream(const ConvertArg *a)
{
	return a->engine->stream;
}

/*
 * The key as tombstones and advisory locks name it: the key column's output, or for a
 * composite key a row literal of them, "(acme,42)", quoted as record_out quotes.
 */
char *
KeyText(const ResolvedMapping *m, const Rec *r)
{
	if (m->nkeys == 1)
		return OutputFunctionCall(&m->key_output[0], r->values[m->key_cols[0]]);
	StringInfoData buf;
	initStringInfo(&buf);
	appendStringInfoChar(&buf, '(');
	for (int k = 0; k < m->nkeys; k++) {
		if (k > 0)
			appendStringInfoChar(&buf, ',');
		int c = m->key_cols[k];
		if (r->nulls[c])
			continue;
		const char *v = OutputFunctionCall(&m->key_output[k], r->values[c]);
		bool quote = *v == '\0';
		for (const char *p = v; *p && !quote; p++)
			quote = *p == '"' || *p == '\\' || *p == '(' || *p == ')' || *p == ',' || isspace((unsigned char) *p);
		if (!quote) {
			appendStringInfoString(&buf, v);
			continue;
		}
		appendStringInfoChar(&buf, '"');
		for (const char *p = v; *p; p++) {
			if (*p == '"' || *p == '\\')
				appendStringInfoChar(&buf, *p);
			appendStringInfoChar(&buf, *p);
		}
		appendStringInfoChar(&buf, '"');
	}
	appendStringInfoChar(&buf, ')');
	return buf.data;
}

void
ConvertStep(void *p)
{
	ConvertArg *a = (ConvertArg *) p;
	Group *g = a->group;
	ResolvedMapping *m = g->map;
	json::Document *doc = a->engine->batch->doc;
	for (; a->pos < g->nrecs; a->pos++) {
		Rec *r = g->recs[a->pos];
		r->values = (Datum *) palloc(sizeof(Datum) * m->ncolumns);
		r->nulls = (bool *) palloc(sizeof(bool) * m->ncolumns);
		/*
		 * Where each column's value is: found by the prefetch thread with this mapping's locator,
		 * or else here, every data field of the record in one walk (not one search per column).
		 */
		const json::Node *const *found = nullptr;
		if (a->engine->batch->prepared != nullptr && m->locator != nullptr && r->index < a->engine->batch->nrecords)
			found = a->engine->batch->prepared->Sources(r->index, m->locator->locator.get());
		if (found == nullptr)
			m->fields->Match(*doc, r->data, a->fields);
		r->unchanged = nullptr;
		for (a->col = 0; a->col < m->ncolumns; a->col++) {
			const MappedColumn *col = &m->columns[a->col];
			if (col->source == SourceKind::Version) {
				char text[48];
				if (r->has_version)
					stream::DecimalText(stream::Version(r->lsn, r->lsn_idx), text);
				r->values[a->col] = InputFunctionCall(const_cast<FmgrInfo *>(&col->input), r->has_version ? text : nullptr,
													  col->ioparam, col->typmod);
				r->nulls[a->col] = !r->has_version;
				continue;
			}
			if (e_stream(a) && col->key_slot >= 0) {
				r->values[a->col] = ConvertValue(col, doc, a->engine->literals, r->key_nodes[col->key_slot],
												 &r->nulls[a->col]);
				continue;
			}
			if (col->source == SourceKind::Deleted) {
				r->values[a->col] = BoolGetDatum(r->deleted);
				r->nulls[a->col] = false;
				if (col->is_domain)
					domain_check(r->values[a->col], false, col->type, nullptr, nullptr);
				continue;
			}
			if (col->from_data && r->data == nullptr) {
				/* a delete without data: the column is not written (see ApplyGroup) */
				r->values[a->col] = (Datum) 0;
				r->nulls[a->col] = true;
				continue;
			}
			const json::Node *src = found != nullptr ? found[a->col] : FindColumnSource(doc, r->node, a->fields, col);
			if (r->update && col->from_data && stream::IsUnchangedToast(src)) {
				/* the stored value stays (see ApplyGroup) */
				if (r->unchanged == nullptr)
					r->unchanged = (bool *) palloc0(sizeof(bool) * m->ncolumns);
				r->unchanged[a->col] = true;
				r->values[a->col] = (Datum) 0;
				r->nulls[a->col] = true;
				continue;
			}
			r->values[a->col] = ConvertValue(col, doc, a->engine->literals, src, &r->nulls[a->col]);
		}
		if (m->hard_delete)
			r->key_text = KeyText(m, r);
	}
}

/* Resolves the group's mapping (once); when it cannot be, every record of the group is parked. */
bool
ResolveGroup(Engine *e, Group *g)
{
	if (g->map != nullptr)
		return true;
	ResolveArg ra = {e, g, e->batch->cxt};
	ErrorData *err = RunProtected(ResolveStep, &ra, e->batch->cxt);
	if (err != nullptr) {
		for (int i = 0; i < g->nrecs; i++)
			Fail(e, g->recs[i]->index, err->sqlerrcode, ErrorText(err));
		g->nrecs = 0;
		return false;
	}
	return true;
}

void
ConvertGroup(Engine *e, Group *g)
{
	if (!ResolveGroup(e, g))
		return;
	ConvertArg ca = {e, g, 0, 0, nullptr};
	ca.fields = (const json::Node **) palloc(sizeof(*ca.fields) * Max(g->map->nfields, 1));
	while (ca.pos < g->nrecs) {
		ErrorData *err = RunProtected(ConvertStep, &ca, e->batch->cxt);
		if (err == nullptr)
			break;
		Rec *r = g->recs[ca.pos];
		Fail(e, r->index, err->sqlerrcode,
			 psprintf("column \"%s\": %s", g->map->columns[ca.col].name, ErrorText(err)));
		ca.pos++;
	}
	Compact(e, g);
}

/* ---- stream messages: keys and key changes ---- */

/* The value of the key column `name` in a record: the field of that name, else one matching it
 * ignoring case and underscores (as every other column). */
const json::Node *
KeyField(const json::Document *doc, const json::Node *obj, const char *name)
{
	const json::Node *n = doc->Find(obj, name);
	if (n == nullptr)
		n = record::FindDataField(*doc, obj, name);
	return n;
}

/* Two JSON scalars as sent: the same kind and the same text. */
bool
SameScalar(const json::Node *a, const json::Node *b)
{
	return a->kind == b->kind && a->Str() == b->Str();
}

/* What in-batch reduction groups by: each key value's kind and text, length-prefixed. */
void
SetReductionKey(Rec *r, int nkeys)
{
	StringInfoData buf;
	initStringInfo(&buf);
	for (int k = 0; k < nkeys; k++) {
		const json::Node *n = r->key_nodes[k];
		uint32 len = (uint32) n->Str().size();
		appendStringInfoChar(&buf, (char) n->kind);
		appendBinaryStringInfo(&buf, (const char *) &len, sizeof(len));
		appendBinaryStringInfo(&buf, n->Str().data(), (int) len);
	}
	r->id = buf.data;
	r->id_len = (uint32) buf.len;
}

/*
 * After the group's mapping is resolved: each message's key from its record (parked when a key
 * value is missing), and for an update whose "changes" holds other values for key columns, a
 * second, synthetic record: the delete of the old key, at the same version, so the row moves.
 */
void
PrepareStream(Engine *e, Group *g)
{
	if (!ResolveGroup(e, g))
		return;
	ResolvedMapping *m = g->map;
	json::Document *doc = e->batch->doc;
	int n = g->nrecs;
	for (int i = 0; i < n; i++) {
		Rec *r = g->recs[i];
		r->key_nodes = (const json::Node **) palloc(sizeof(json::Node *) * m->nkeys);
		const json::Node **old_key = nullptr;
		bool missing = false;
		for (int k = 0; k < m->nkeys && !missing; k++) {
			const char *name = m->columns[m->key_cols[k]].name;
			const json::Node *v = KeyField(doc, r->record, name);
			if (v == nullptr || v->IsNull() || v->IsObject() || v->IsArray()) {
				Fail(e, r->index, ERRCODE_INVALID_PARAMETER_VALUE,
					 psprintf("message record has no value for key column \"%s\" of table %s", name,
							  m->display_name));
				missing = true;
				break;
			}
			r->key_nodes[k] = v;
			const json::Node *was = r->changes != nullptr ? KeyField(doc, r->changes, name) : nullptr;
			if (was != nullptr && !was->IsNull() && !was->IsObject() && !was->IsArray() && !SameScalar(was, v)) {
				if (old_key == nullptr) {
					old_key = (const json::Node **) palloc(sizeof(json::Node *) * m->nkeys);
					for (int j = 0; j < m->nkeys; j++)
						old_key[j] = nullptr;
				}
				old_key[k] = was;
			}
		}
		if (missing)
			continue;
		SetReductionKey(r, m->nkeys);
		if (r->update)
			doc->ForEachChild(r->record, [r](const json::Node &v) {
				if (stream::IsUnchangedToast(&v))
					r->keeps_toast = true;
			});
		if (old_key != nullptr) {
			Rec *d = &e->recs[e->nrecs++];
			*d = *r;
			d->synthetic = true;
			d->deleted = true;
			d->update = false;
			d->keeps_toast = false;
			d->data = nullptr;
			for (int k = 0; k < m->nkeys; k++)
				if (old_key[k] == nullptr)
					old_key[k] = r->key_nodes[k];
			d->key_nodes = old_key;
			SetReductionKey(d, m->nkeys);
			AddToGroup(g, d);
		}
	}
	Compact(e, g);
}

/* ---- steps 4 and 5: statements ---- */

enum class StmtKind {
	Upsert,			/* every mapped column */
	UpsertStandard,	/* soft deletes without data: the columns not taken from data */
	UpdateKeeping,	/* stream updates with "unchanged_toast" columns: the others, on stored rows */
	Delete,			/* hard deletes */
};

struct Stmt {
	Group	   *group;
	StmtKind	kind;
	char	   *sql;
	int			nargs;
	Oid		   *argtypes;
	int		   *cols;			/* upserts: the mapped column of each parameter */
	const bool *unchanged;		/* UpdateKeeping: the columns left out */
};

const char *
ColumnType(const MappedColumn *col)
{
	return format_type_extended(col->type, col->typmod, FORMAT_TYPE_TYPEMOD_GIVEN | FORMAT_TYPE_FORCE_QUALIFY);
}

/*
 * The upsert of a mapping: INSERT ... ON CONFLICT (id) DO UPDATE under the version guard, with
 * every mapped column.
 *
 * Two rules keep every statement of the engine (this one and BuildDelete's) usable on Citus
 * distributed and reference tables, at no cost on plain Postgres (see the README's Citus
 * section; test/test_statement_shapes.py pins both):
 *  - the statement's own command is a SELECT, the writes are data-modifying CTEs it reads.  The
 *    caller counts skipped records from the number of rows returned, and for a top-level
 *    INSERT ... SELECT ... RETURNING Citus reports the rows it sent instead, which also fails
 *    SPI's tuple count check; a SELECT's count is its rows;
 *  - no subquery expression (EXISTS, IN, a scalar subquery): Citus refuses a correlated one
 *    when the FROM clause holds a CTE, and would pull a whole distributed table to the
 *    coordinator for an outer join to it.  Whether a key has a row is an inner join in a CTE of
 *    its own, which Citus runs on each shard.
 *
 * UpsertStandard, for soft deletes without data, writes only the columns not taken from data,
 * so the row's data columns stay as they are.  It cannot be the same INSERT with fewer columns:
 * Postgres checks the proposed row's constraints before it looks for a conflict, so a data
 * column that is NOT NULL (or a domain that is) would refuse the delete of a row that exists.
 * Existing rows (e) are therefore UPDATEd (u), and only ids without a row are INSERTed (i, with
 * their data columns' defaults); a row inserted meanwhile by someone else still meets ON
 * CONFLICT.  On one server all parts see the same snapshot; Citus runs them one after the other,
 * and u only changes rows that e finds anyway, so either way each record goes to exactly one of
 * u and i.  Being a second statement of the group, it can deadlock with a concurrent batch whose
 * statements lock the same rows in the other order; Postgres detects it, and a deadlock is
 * transient (the batch is retried).
 */
/* "<l>.<k1> = <r>.c<a1> AND ...": the key columns of the mapping matched to statement columns. */
char *
KeyMatch(const ResolvedMapping *m, const char *left, const char *right, const int *key_arg)
{
	StringInfoData buf;
	initStringInfo(&buf);
	for (int k = 0; k < m->nkeys; k++)
		appendStringInfo(&buf, "%s%s.%s = %s.c%d", k ? " AND " : "", left,
						 quote_identifier(m->columns[m->key_cols[k]].name), right, key_arg[k]);
	return buf.data;
}

/* Whether an UpsertStandard (a soft delete without data) writes the column. */
bool
InStandard(const ResolvedMapping *m, const MappedColumn *col)
{
	if (m->protocol == Protocol::Stream)
		return col->key_slot >= 0 || col->source == SourceKind::Version || col->source == SourceKind::Deleted;
	return !col->from_data;
}

void
BuildUpsert(Stmt *s)
{
	ResolvedMapping *m = s->group->map;
	bool standard = s->kind == StmtKind::UpsertStandard;
	bool kept = s->kind == StmtKind::UpdateKeeping;
	StringInfoData sql, sel, names, args, projected, set, update_set, plain, conflict;
	initStringInfo(&sql);
	initStringInfo(&projected);
	initStringInfo(&sel);
	initStringInfo(&names);
	initStringInfo(&args);
	initStringInfo(&set);
	initStringInfo(&update_set);
	initStringInfo(&plain);
	initStringInfo(&conflict);
	s->nargs = 0;
	s->argtypes = (Oid *) palloc(sizeof(Oid) * m->ncolumns);
	s->cols = (int *) palloc(sizeof(int) * m->ncolumns);
	int *key_arg = (int *) palloc(sizeof(int) * m->nkeys);
	int idx_arg = 0;
	for (int c = 0; c < m->ncolumns; c++) {
		const MappedColumn *col = &m->columns[c];
		if (standard && !InStandard(m, col))
			continue;
		if (kept && s->unchanged[c])
			continue;
		int i = s->nargs++;
		const char *sep = i ? ", " : "";
		const char *qname = quote_identifier(col->name);
		appendStringInfo(&names, "%s%s", sep, qname);
		appendStringInfo(&args, "%spg_catalog.unnest($%d)", sep, i + 1);
		appendStringInfo(&projected, "%spg_catalog.unnest($%d) AS c%d", sep, i + 1, i + 1);
		appendStringInfo(&sel, "%ss.c%d%s%s", sep, i + 1, col->pass_as_text ? "::" : "",
						 col->pass_as_text ? ColumnType(col) : "");
		if (standard || kept)
			appendStringInfo(&sel, " AS c%d", i + 1);
		appendStringInfo(&plain, "%ss.c%d", sep, i + 1);
		if (col->key_slot >= 0) {
			key_arg[col->key_slot] = i + 1;
			appendStringInfo(&conflict, "%s%s", conflict.len ? ", " : "", qname);
		} else {
			appendStringInfo(&set, "%s%s = EXCLUDED.%s", set.len ? ", " : "", qname, qname);
			appendStringInfo(&update_set, "%s%s = s.c%d", update_set.len ? ", " : "", qname, i + 1);
		}
		if (c == m->idx_col)
			idx_arg = i + 1;
		s->argtypes[i] = col->pass_as_text ? TEXTARRAYOID : col->array_type;
		s->cols[i] = c;
	}
	StringInfoData aliases;
	initStringInfo(&aliases);
	for (int i = 0; i < s->nargs; i++)
		appendStringInfo(&aliases, "%sc%d", i ? ", " : "", i + 1);
	const char *idx = quote_identifier(m->columns[m->idx_col].name);
	const char *deleted = m->hard_delete ? "false"
										 : psprintf("COALESCE(t.%s, false)",
													quote_identifier(m->columns[m->deleted_col].name));
	StringInfoData ecols, ecmatch; /* the key's columns of s, and e (which has their names) joined to s */
	initStringInfo(&ecols);
	initStringInfo(&ecmatch);
	for (int k = 0; k < m->nkeys; k++) {
		appendStringInfo(&ecols, "%ss.c%d", k ? ", " : "", key_arg[k]);
		appendStringInfo(&ecmatch, "%se.c%d = s.c%d", k ? " AND " : "", key_arg[k], key_arg[k]);
	}
	if (s->kind == StmtKind::Upsert) {
		appendStringInfo(&sql,
						 "WITH w AS (INSERT INTO %s AS t (%s) SELECT %s FROM (SELECT %s) AS s "
						 "ON CONFLICT (%s) DO UPDATE SET %s WHERE t.%s IS NULL OR t.%s < EXCLUDED.%s "
						 "RETURNING (t.xmax = 0), %s) "
						 "SELECT * FROM w",
						 m->qualified_name, names.data, sel.data, projected.data,
						 conflict.data, set.data, idx, idx, idx, deleted);
	} else if (standard) {
		appendStringInfo(&sql,
						 "WITH s AS (SELECT %s FROM ROWS FROM (%s) AS s(%s)), "
						 "e AS (SELECT %s FROM s JOIN %s AS x ON %s), "
						 "u AS (UPDATE %s AS t SET %s FROM s WHERE %s AND (t.%s IS NULL OR t.%s < s.c%d) "
						 "RETURNING false, %s), "
						 "i AS (INSERT INTO %s AS t (%s) SELECT %s FROM s LEFT JOIN e ON %s WHERE e.c%d IS NULL "
						 "ON CONFLICT (%s) DO UPDATE SET %s WHERE t.%s IS NULL OR t.%s < EXCLUDED.%s "
						 "RETURNING (t.xmax = 0), %s) "
						 "SELECT * FROM u UNION ALL SELECT * FROM i",
						 sel.data, args.data, aliases.data,
						 ecols.data, m->qualified_name, KeyMatch(m, "x", "s", key_arg),
						 m->qualified_name, update_set.data, KeyMatch(m, "t", "s", key_arg), idx, idx, idx_arg, deleted,
						 m->qualified_name, names.data, plain.data, ecmatch.data, key_arg[0],
						 conflict.data, set.data, idx, idx, idx, deleted);
	} else {
		/*
		 * UpdateKeeping: updates that keep the stored value of the columns sent as
		 * "unchanged_toast" (left out here).  Only a stored row has that value, so the rows
		 * are UPDATEd, never inserted, and each record says whether it updated its row (u)
		 * or found one that is as new or newer (e); neither means there is no row to keep
		 * the value from, and the record is parked.
		 */
		appendStringInfo(&sql,
						 "WITH s AS (SELECT %s, s.o FROM ROWS FROM (%s) WITH ORDINALITY AS s(%s, o)), "
						 "u AS (UPDATE %s AS t SET %s FROM s WHERE %s AND (t.%s IS NULL OR t.%s < s.c%d) RETURNING s.o), "
						 "e AS (SELECT s.o FROM s JOIN %s AS x ON %s) "
						 "SELECT s.o, u.o IS NOT NULL, e.o IS NOT NULL "
						 "FROM s LEFT JOIN u ON u.o = s.o LEFT JOIN e ON e.o = s.o ORDER BY s.o",
						 sel.data, args.data, aliases.data,
						 m->qualified_name, update_set.data, KeyMatch(m, "t", "s", key_arg), idx, idx, idx_arg,
						 m->qualified_name, KeyMatch(m, "x", "s", key_arg));
	}
	s->sql = sql.data;
}

void
BuildDelete(Stmt *s)
{
	ResolvedMapping *m = s->group->map;
	const char *idx = quote_identifier(m->columns[m->idx_col].name);
	s->nargs = m->nkeys + 1;
	s->argtypes = (Oid *) palloc(sizeof(Oid) * s->nargs);
	StringInfoData keys, args, names, match, present;
	initStringInfo(&keys);
	initStringInfo(&args);
	initStringInfo(&names);
	initStringInfo(&match);
	initStringInfo(&present);
	for (int k = 0; k < m->nkeys; k++) {
		const MappedColumn *col = &m->columns[m->key_cols[k]];
		const char *qname = quote_identifier(col->name);
		s->argtypes[k] = col->pass_as_text ? TEXTARRAYOID : col->array_type;
		appendStringInfo(&keys, "u.k%d%s AS k%d, ", k + 1, col->pass_as_text ? psprintf("::%s", ColumnType(col)) : "",
						 k + 1);
		appendStringInfo(&args, "pg_catalog.unnest($%d), ", k + 1);
		appendStringInfo(&names, "k%d, ", k + 1);
		appendStringInfo(&match, "%st.%s = d.k%d", k ? " AND " : "", qname, k + 1);
		appendStringInfo(&present, "%sx.%s = d.k%d", k ? " AND " : "", qname, k + 1);
	}
	s->argtypes[m->nkeys] = m->protocol == Protocol::Stream ? NUMERICARRAYOID : INT8ARRAYOID;
	/*
	 * One row per deleted version: removed (the row was older and is gone), present (a row
	 * is there, so unless removed it is newer: a stale delete).  Neither: the row was already
	 * absent and the delete only raises the tombstone.  Shaped for Citus as BuildUpsert says:
	 * present is an inner join in a CTE of its own, not an EXISTS.  On one server p sees the
	 * snapshot before the DELETE, so a removed row also reads as present; Citus may run p after
	 * del, and then it does not.  removed is checked first, so both give the same answer.
	 */
	s->sql = psprintf("WITH d AS (SELECT %su.v, u.o FROM ROWS FROM (%spg_catalog.unnest($%d)) WITH ORDINALITY AS u(%sv, o)), "
					  "del AS (DELETE FROM %s AS t USING d WHERE %s AND (t.%s IS NULL OR t.%s < d.v) RETURNING d.o), "
					  "p AS (SELECT d.o FROM d JOIN %s AS x ON %s) "
					  "SELECT d.o, del.o IS NOT NULL, p.o IS NOT NULL "
					  "FROM d LEFT JOIN del ON del.o = d.o LEFT JOIN p ON p.o = d.o ORDER BY d.o",
					  keys.data, args.data, m->nkeys + 1, names.data,
					  m->qualified_name, match.data, idx, idx, m->qualified_name, present.data);
}

/* A one-dimensional array of n elements of the given type. */
Datum
MakeArray(Datum *elems, bool *nulls, int n, Oid elemtype)
{
	int16 typlen;
	bool typbyval;
	char typalign;
	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	int dims[1] = {n};
	int lbs[1] = {1};
	return PointerGetDatum(construct_md_array(elems, nulls, 1, dims, lbs, elemtype, typlen, typbyval, typalign));
}

/*
 * The records' versions: bigint for v1 (updated_idx), numeric for Sequin Stream (96 bits), NULL
 * for a read.  *type is the array type.
 */
Datum
VersionArray(const Engine *e, Rec **recs, int n, Oid *type)
{
	Datum *elems = (Datum *) palloc(sizeof(Datum) * Max(n, 1));
	bool *nulls = (bool *) palloc(sizeof(bool) * Max(n, 1));
	for (int i = 0; i < n; i++) {
		nulls[i] = !recs[i]->has_version;
		if (nulls[i])
			elems[i] = (Datum) 0;
		else if (!e->stream)
			elems[i] = Int64GetDatum(recs[i]->idx);
		else {
			char text[48];
			stream::DecimalText(stream::Version(recs[i]->lsn, recs[i]->lsn_idx), text);
			elems[i] = DirectFunctionCall3(numeric_in, CStringGetDatum(text), ObjectIdGetDatum(InvalidOid),
										   Int32GetDatum(-1));
		}
	}
	*type = e->stream ? NUMERICARRAYOID : INT8ARRAYOID;
	return MakeArray(elems, nulls, n, e->stream ? NUMERICOID : INT8OID);
}

Datum
KeyTextArray(Rec **recs, int n)
{
	Datum *elems = (Datum *) palloc(sizeof(Datum) * Max(n, 1));
	for (int i = 0; i < n; i++)
		elems[i] = CStringGetTextDatum(recs[i]->key_text);
	return MakeArray(elems, nullptr, n, TEXTOID);
}

/* The column's values of n records as one array parameter. */
Datum
ColumnArray(const MappedColumn *col, int c, Rec **recs, int n)
{
	Datum *elems = (Datum *) palloc(sizeof(Datum) * Max(n, 1));
	bool *nulls = (bool *) palloc(sizeof(bool) * Max(n, 1));
	for (int i = 0; i < n; i++) {
		elems[i] = recs[i]->values[c];
		nulls[i] = recs[i]->nulls[c];
	}
	return MakeArray(elems, nulls, n, col->pass_as_text ? TEXTOID : col->type);
}

struct ExecArg {
	Engine	   *engine;
	Stmt	   *stmt;
	Rec		  **recs;
	int			n;
	ApplyCounts counts;			/* of this attempt; added to the batch only on success */
	Rec		  **missing;		/* UpdateKeeping: the records that found no row (nmissing) */
	int			nmissing;
};

/* Raises (or rather: keeps) the tombstones of the deletes that took effect; as the extension owner. */
void
WriteTombstones(const Engine *e, Group *g, Rec **recs, int n)
{
	if (n == 0)
		return;
	Oid argtypes[3] = {REGCLASSOID, TEXTARRAYOID, InvalidOid};
	Datum values[3] = {ObjectIdGetDatum(g->relid), KeyTextArray(recs, n), VersionArray(e, recs, n, &argtypes[2])};
	SpiExecCached("INSERT INTO sequin_sync.tombstones AS tb (target, id, updated_idx) "
			"SELECT $1, u.k, u.v FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3)) AS u(k, v) "
			"ON CONFLICT (target, id) DO UPDATE SET updated_idx = EXCLUDED.updated_idx, deleted_at = pg_catalog.now() "
			"WHERE tb.updated_idx < EXCLUDED.updated_idx",
			3, argtypes, values, nullptr, false, 0);
}

void
ExecStep(void *p)
{
	ExecArg *a = (ExecArg *) p;
	Stmt *s = a->stmt;
	Group *g = s->group;
	ResolvedMapping *m = g->map;
	Datum *values = (Datum *) palloc(sizeof(Datum) * s->nargs);
	memset(&a->counts, 0, sizeof(a->counts));

	if (s->kind != StmtKind::Delete) {
		for (int i = 0; i < s->nargs; i++)
			values[i] = ColumnArray(&m->columns[s->cols[i]], s->cols[i], a->recs, a->n);
	} else {
		for (int k = 0; k < m->nkeys; k++)
			values[k] = ColumnArray(&m->columns[m->key_cols[k]], m->key_cols[k], a->recs, a->n);
		Oid type;
		values[m->nkeys] = VersionArray(a->engine, a->recs, a->n, &type);
	}

	RoleSwitch rs;
	BeginAsRole(&rs, g->owner, true);
	SpiExecCached(s->sql, s->nargs, s->argtypes, values, nullptr, false, 0);
	EndAsRole(&rs);

	uint64 returned = SPI_processed;
	SPITupleTable *tt = SPI_tuptable;
	a->nmissing = 0;
	if (s->kind == StmtKind::UpdateKeeping) {
		for (uint64 i = 0; i < returned; i++) {
			bool isnull;
			int64 ord = DatumGetInt64(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));
			bool updated = DatumGetBool(SPI_getbinval(tt->vals[i], tt->tupdesc, 2, &isnull));
			bool present = DatumGetBool(SPI_getbinval(tt->vals[i], tt->tupdesc, 3, &isnull));
			if (updated)
				a->counts.updated++;
			else if (present)
				a->counts.skipped++;
			else
				a->missing[a->nmissing++] = a->recs[ord - 1];
		}
	} else if (s->kind != StmtKind::Delete) {
		for (uint64 i = 0; i < returned; i++) {
			bool isnull;
			bool inserted = DatumGetBool(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));
			bool deleted = DatumGetBool(SPI_getbinval(tt->vals[i], tt->tupdesc, 2, &isnull));
			if (deleted)
				a->counts.deleted++;
			else if (inserted)
				a->counts.inserted++;
			else
				a->counts.updated++;
		}
		a->counts.skipped = a->n - (int64) returned;
		/* Which records were skipped is not needed: they are not parked, only counted. */
	} else {
		Rec **effective = (Rec **) palloc(sizeof(*effective) * Max(a->n, 1));
		int neffective = 0;
		for (uint64 i = 0; i < returned; i++) {
			bool isnull;
			int64 ord = DatumGetInt64(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));
			bool removed = DatumGetBool(SPI_getbinval(tt->vals[i], tt->tupdesc, 2, &isnull));
			bool present = DatumGetBool(SPI_getbinval(tt->vals[i], tt->tupdesc, 3, &isnull));
			if (removed || !present) {
				effective[neffective++] = a->recs[ord - 1];
				a->counts.deleted++;
			} else {
				a->counts.skipped++;
			}
		}
		WriteTombstones(a->engine, g, effective, neffective);
	}
}

/*
 * A stream update that keeps columns' stored values ("unchanged_toast") met no row to keep them
 * from.  Writing NULL where the source has a value would be silently wrong data, so it is parked.
 */
void
FailNoStoredRow(Engine *e, const Stmt *s, const Rec *r)
{
	const ResolvedMapping *m = s->group->map;
	StringInfoData cols;
	initStringInfo(&cols);
	for (int c = 0; c < m->ncolumns; c++)
		if (s->unchanged[c])
			appendStringInfo(&cols, "%s\"%s\"", cols.len ? ", " : "", m->columns[c].name);
	Fail(e, r->index, ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
		 psprintf("update sends column %s as \"unchanged_toast\", but table %s has no row for its key to keep the value from "
				  "(backfill the table from Sequin, or set REPLICA IDENTITY FULL on the source table so updates carry every value)",
				  cols.data, m->display_name));
}

/*
 * Runs a statement for recs[0, n); when it fails, halves the set until the records that fail
 * alone are found, and parks them with their error.  Everything else is applied.
 */
void
ExecBisect(Engine *e, Stmt *s, Rec **recs, int n)
{
	if (n == 0)
		return;
	ExecArg a = {e, s, recs, n, {}, nullptr, 0};
	a.missing = (Rec **) palloc(sizeof(Rec *) * n);
	ErrorData *err = RunProtected(ExecStep, &a, e->batch->cxt);
	if (err == nullptr) {
		ApplyCounts *c = &e->batch->counts;
		c->inserted += a.counts.inserted;
		c->updated += a.counts.updated;
		c->deleted += a.counts.deleted;
		c->skipped += a.counts.skipped;
		for (int i = 0; i < a.nmissing; i++)
			FailNoStoredRow(e, s, a.missing[i]);
		return;
	}
	if (n == 1) {
		Fail(e, recs[0]->index, err->sqlerrcode, ErrorText(err));
		return;
	}
	int half = n / 2;
	ExecBisect(e, s, recs, half);
	ExecBisect(e, s, recs + half, n - half);
}

/*
 * Hard deletes: serialize concurrent appliers of the same keys (advisory locks taken in id
 * order, held to commit), then skip every version a tombstone says is stale.  Without the lock
 * a concurrent upsert could read "no tombstone" while a delete of a newer version commits.
 * No subtransaction: these statements touch only our own table, so an error here is no
 * record's fault and fails the batch.
 */
void
SkipTombstoned(Engine *e, Group *g)
{
	Oid argtypes[3] = {REGCLASSOID, TEXTARRAYOID, InvalidOid};
	Datum values[3] = {ObjectIdGetDatum(g->relid), KeyTextArray(g->recs, g->nrecs),
					   VersionArray(e, g->recs, g->nrecs, &argtypes[2])};
	SpiExecCached("SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended($1::pg_catalog.oid::pg_catalog.text "
			"OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) u.k, 0)) "
			"FROM pg_catalog.unnest($2) WITH ORDINALITY AS u(k, o) ORDER BY u.o",
			3, argtypes, values, nullptr, false, 0);
	SpiExecCached("SELECT u.o FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3)) WITH ORDINALITY AS u(k, v, o) "
			"JOIN sequin_sync.tombstones tb ON tb.target = $1 AND tb.id = u.k AND (u.v IS NULL OR tb.updated_idx >= u.v)",
			3, argtypes, values, nullptr, false, 0);
	for (uint64 i = 0; i < SPI_processed; i++) {
		bool isnull;
		int64 ord = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		SkipRec(e, g->recs[ord - 1]);
	}
}

/* By the set of columns kept, so each set is one statement. */
int
ncolumns_for_compare = 0;

int
CompareUnchanged(const void *a, const void *b)
{
	const Rec *ra = *(const Rec *const *) a;
	const Rec *rb = *(const Rec *const *) b;
	return memcmp(ra->unchanged, rb->unchanged, ncolumns_for_compare);
}

/*
 * A backfill read carries the row's state when it was read, which Sequin delivers after every
 * change of the row it had delivered before (one message in flight per row, in order).  So a
 * change that was parked before the read is older than what the read brings, and retrying it
 * later must not put it over the read's row (which has no version to guard with): the read
 * supersedes it, and its dead letter goes.  Not for reads that are themselves retried from the
 * dead letters: a change parked after such a read is newer than it.
 */
void
SupersedeDeadLetters(Engine *e, Group *g, Rec **reads, int n)
{
	json::Document *doc = e->batch->doc;
	ResolvedMapping *m = g->map;
	Datum *keys = (Datum *) palloc(sizeof(Datum) * Max(n, 1));
	for (int i = 0; i < n; i++) {
		StringInfoData buf;
		initStringInfo(&buf);
		appendStringInfoChar(&buf, '{');
		for (int k = 0; k < m->nkeys; k++) {
			const json::Node *v = reads[i]->key_nodes[k];
			const char *text;
			size_t len;
			if (k > 0)
				appendStringInfoChar(&buf, ',');
			escape_json(&buf, pnstrdup(v->Key().data(), v->Key().size()));
			appendStringInfoChar(&buf, ':');
			if (!doc->Serialize(v, &text, &len))
				ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
			appendBinaryStringInfo(&buf, text, (int) len);
		}
		appendStringInfoChar(&buf, '}');
		keys[i] = DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data));
	}
	Oid argtypes[3] = {TEXTOID, TEXTOID, JSONBARRAYOID};
	Datum values[3] = {CStringGetTextDatum(e->batch->consumer), CStringGetTextDatum(g->collection),
					   MakeArray(keys, nullptr, n, JSONBOID)};
	/* the superseded changes' newest version per read (NULL when none had one) */
	SpiExecCached("WITH u AS (SELECT u.k, u.o FROM pg_catalog.unnest($3) WITH ORDINALITY AS u(k, o)), "
				  "del AS (DELETE FROM sequin_sync.dead_letters d USING u "
				  "WHERE d.consumer = $1 AND d.collection = $2 "
				  "AND (d.record OPERATOR(pg_catalog.->) 'record') OPERATOR(pg_catalog.@>) u.k "
				  "RETURNING u.o, d.record OPERATOR(pg_catalog.->) 'metadata' AS md) "
				  "SELECT o, pg_catalog.max((md OPERATOR(pg_catalog.->>) 'commit_lsn')::pg_catalog.numeric "
				  "OPERATOR(pg_catalog.*) 4294967296 OPERATOR(pg_catalog.+) (md OPERATOR(pg_catalog.->>) 'commit_idx')::pg_catalog.numeric) "
				  "FILTER (WHERE pg_catalog.jsonb_typeof(md OPERATOR(pg_catalog.->) 'commit_lsn') = 'number' "
				  "AND pg_catalog.jsonb_typeof(md OPERATOR(pg_catalog.->) 'commit_idx') = 'number') "
				  "FROM del GROUP BY o",
				  3, argtypes, values, nullptr, false, 0);
	/*
	 * The read's row holds state as new as those changes or newer, but no version: a replay of
	 * one of them (Sequin redelivers acked messages after a restart) would pass the guard and
	 * put older data over it.  So the row takes the newest superseded version as its own.
	 */
	Rec **floor = (Rec **) palloc(sizeof(Rec *) * Max(n, 1));
	Datum *versions = (Datum *) palloc(sizeof(Datum) * Max(n, 1));
	int nfloor = 0;
	for (uint64 i = 0; i < SPI_processed; i++) {
		bool isnull;
		int64 ord = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		Datum v = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull);
		if (isnull)
			continue;
		floor[nfloor] = reads[ord - 1];
		versions[nfloor++] = v;
	}
	if (nfloor == 0)
		return;
	const char *idx = quote_identifier(m->columns[m->idx_col].name);
	StringInfoData sql, args, names, match;
	initStringInfo(&sql);
	initStringInfo(&args);
	initStringInfo(&names);
	initStringInfo(&match);
	Oid *types = (Oid *) palloc(sizeof(Oid) * (m->nkeys + 1));
	Datum *params = (Datum *) palloc(sizeof(Datum) * (m->nkeys + 1));
	for (int k = 0; k < m->nkeys; k++) {
		int c = m->key_cols[k];
		const MappedColumn *col = &m->columns[c];
		types[k] = col->pass_as_text ? TEXTARRAYOID : col->array_type;
		params[k] = ColumnArray(col, c, floor, nfloor);
		appendStringInfo(&args, "pg_catalog.unnest($%d), ", k + 1);
		appendStringInfo(&names, "k%d, ", k + 1);
		appendStringInfo(&match, " AND t.%s = u.k%d%s", quote_identifier(col->name), k + 1,
						 col->pass_as_text ? psprintf("::%s", ColumnType(col)) : "");
	}
	types[m->nkeys] = NUMERICARRAYOID;
	params[m->nkeys] = MakeArray(versions, nullptr, nfloor, NUMERICOID);
	appendStringInfo(&sql, "WITH w AS (UPDATE %s AS t SET %s = u.v FROM ROWS FROM (%spg_catalog.unnest($%d)) AS u(%sv) "
					 "WHERE t.%s IS NULL%s RETURNING 1) SELECT * FROM w",
					 m->qualified_name, idx, args.data, m->nkeys + 1, names.data, idx, match.data);
	RoleSwitch rs;
	BeginAsRole(&rs, g->owner, true);
	SpiExecCached(sql.data, m->nkeys + 1, types, params, nullptr, false, 0);
	EndAsRole(&rs);
}

void ApplyRound(Engine *e, Group *g);

void
ApplyGroup(Engine *e, Group *g)
{
	if (e->stream) {
		PrepareStream(e, g);
		if (g->nrecs == 0)
			return;
	}
	int rounds = Reduce(e, g);
	if (rounds <= 1) {
		ApplyRound(e, g);
		return;
	}
	/* one round after the other, each a group of its own records (see Reduce) */
	Rec **all = g->recs;
	int nall = g->nrecs;
	for (int round = 0; round < rounds; round++) {
		g->recs = (Rec **) palloc(sizeof(Rec *) * nall);
		g->nrecs = 0;
		for (int i = 0; i < nall; i++)
			if (all[i]->round == round && !all[i]->dropped &&
				e->batch->results[all[i]->index].status != RecordStatus::Failed)
				g->recs[g->nrecs++] = all[i];
		ApplyRound(e, g);
	}
}

/* Converts and writes the group's records: at most one per key (Reduce). */
void
ApplyRound(Engine *e, Group *g)
{
	if (g->nrecs == 0)
		return;
	ConvertGroup(e, g);
	if (g->nrecs == 0)
		return;

	ResolvedMapping *m = g->map;
	Rec **upserts = (Rec **) palloc(sizeof(*upserts) * g->nrecs);
	Rec **standard = (Rec **) palloc(sizeof(*standard) * g->nrecs);
	Rec **deletes = (Rec **) palloc(sizeof(*deletes) * g->nrecs);
	Rec **keeping = (Rec **) palloc(sizeof(*keeping) * g->nrecs);
	Rec **reads = (Rec **) palloc(sizeof(*reads) * g->nrecs);
	int nupserts = 0, nstandard = 0, ndeletes = 0, nkeeping = 0, nreads = 0;

	if (m->hard_delete) {
		SkipTombstoned(e, g);
		Compact(e, g);
	}
	for (int i = 0; i < g->nrecs; i++) {
		Rec *r = g->recs[i];
		if (r->read)
			reads[nreads++] = r;
		if (m->hard_delete && r->deleted)
			deletes[ndeletes++] = r;
		else if (r->data == nullptr)
			standard[nstandard++] = r; /* a soft delete without data (record.cpp allows no other) */
		else if (r->unchanged != nullptr)
			keeping[nkeeping++] = r;
		else
			upserts[nupserts++] = r;
	}

	if (ndeletes > 0) {
		Stmt s = {g, StmtKind::Delete, nullptr, 0, nullptr, nullptr, nullptr};
		BuildDelete(&s);
		ExecBisect(e, &s, deletes, ndeletes);
	}
	if (nstandard > 0) {
		Stmt s = {g, StmtKind::UpsertStandard, nullptr, 0, nullptr, nullptr, nullptr};
		BuildUpsert(&s);
		ExecBisect(e, &s, standard, nstandard);
	}
	if (nupserts > 0) {
		Stmt s = {g, StmtKind::Upsert, nullptr, 0, nullptr, nullptr, nullptr};
		BuildUpsert(&s);
		ExecBisect(e, &s, upserts, nupserts);
	}
	if (nkeeping > 0) {
		ncolumns_for_compare = m->ncolumns;
		qsort(keeping, nkeeping, sizeof(*keeping), CompareUnchanged);
		for (int start = 0, end; start < nkeeping; start = end) {
			for (end = start + 1; end < nkeeping && memcmp(keeping[start]->unchanged, keeping[end]->unchanged, m->ncolumns) == 0; end++)
				;
			Stmt s = {g, StmtKind::UpdateKeeping, nullptr, 0, nullptr, nullptr, keeping[start]->unchanged};
			BuildUpsert(&s);
			ExecBisect(e, &s, keeping + start, end - start);
		}
	}
	if (nreads > 0 && !e->batch->retry) {
		int kept = 0;
		for (int i = 0; i < nreads; i++)
			if (e->batch->results[reads[i]->index].status != RecordStatus::Failed)
				reads[kept++] = reads[i];
		if (kept > 0)
			SupersedeDeadLetters(e, g, reads, kept);
	}
}

struct CommitTimeArg {
	const char *text;
	TimestampTz value;
};

void
CommitTimeStep(void *p)
{
	CommitTimeArg *a = (CommitTimeArg *) p;
	a->value = DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in, CStringGetDatum(a->text),
													   ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1)));
}

/*
 * The newest commit_timestamp among the changes applied (reads carry Sequin's clock, not the
 * source's): how far behind the source the consumer is.  Sequin writes them all in one ISO 8601
 * form (UTC, microseconds), so the greatest text is the newest time.
 */
void
NoteNewestCommit(Engine *e)
{
	std::string_view newest;
	for (int i = 0; i < e->batch->nrecords; i++) {
		const Rec *r = &e->recs[i];
		if (r->read || r->commit_timestamp.empty() || e->batch->results[i].status == RecordStatus::Failed)
			continue;
		if (r->commit_timestamp > newest)
			newest = r->commit_timestamp;
	}
	if (newest.empty() || newest.size() > 64)
		return;
	CommitTimeArg a = {pnstrdup(newest.data(), newest.size()), 0};
	if (RunProtected(CommitTimeStep, &a, e->batch->cxt) == nullptr)
		e->batch->newest_commit_at = a.value;
}

} /* namespace */

json::Document *
NewDocument(MemoryContext cxt)
{
	return NewOwnedBy<json::Document>(cxt);
}

void
InitBatch(ApplyBatch *batch, const char *consumer, Protocol protocol, json::Document *doc,
		  const json::Node **records, int nrecords, MemoryContext cxt)
{
	memset(batch, 0, sizeof(*batch));
	batch->consumer = consumer;
	batch->protocol = protocol;
	batch->doc = doc;
	batch->records = records;
	batch->nrecords = nrecords;
	batch->cxt = cxt;
	batch->results = (RecordResult *) MemoryContextAllocZero(cxt, sizeof(RecordResult) * Max(nrecords, 1));
}

void
ApplyRecords(ApplyBatch *batch)
{
	MemoryContext old = MemoryContextSwitchTo(batch->cxt);
	Engine e;
	e.batch = batch;
	e.stream = batch->protocol == Protocol::Stream;
	e.literals = NewOwnedBy<record::ArrayLiteralWriter>(batch->cxt);
	LoadMappings(&e);
	/* a stream update that changes its key adds the delete of the old one */
	e.recs = (Rec *) palloc0(sizeof(Rec) * Max(batch->nrecords * (e.stream ? 2 : 1), 1));
	e.nrecs = batch->nrecords;
	for (int i = 0; i < batch->nrecords; i++)
		ValidateRecord(&e, i);
	/* Groups are ordered by target table, so concurrent batches lock tables in one order. */
	for (int i = 0; i < e.ngroups; i++) {
		CHECK_FOR_INTERRUPTS();
		ApplyGroup(&e, &e.groups[i]);
	}
	if (e.stream)
		NoteNewestCommit(&e);
	/* for the next prefetch: the locators of the mappings this batch used */
	if (batch->locators_out != nullptr)
		for (int i = 0; i < e.ngroups; i++)
			if (e.groups[i].map != nullptr && e.groups[i].map->locator != nullptr)
				(void) batch->locators_out->Add(e.groups[i].collection, *e.groups[i].map->locator);
	MemoryContextSwitchTo(old);
}

namespace {

struct DeadLetterArg {
	ApplyBatch *batch;
	int			index;
	bool		as_jsonb;
	const char *text;
};

void
DeadLetterStep(void *p)
{
	DeadLetterArg *a = (DeadLetterArg *) p;
	RecordResult *r = &a->batch->results[a->index];
	Oid argtypes[5] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	Datum values[5] = {CStringGetTextDatum(a->batch->consumer),
					   r->collection ? CStringGetTextDatum(r->collection) : (Datum) 0,
					   CStringGetTextDatum(a->text), CStringGetTextDatum(r->error),
					   CStringGetTextDatum(r->sqlstate)};
	char nulls[6] = "     ";
	if (r->collection == nullptr)
		nulls[1] = 'n';
	SpiExecCached(a->as_jsonb
					  ? "INSERT INTO sequin_sync.dead_letters AS d (consumer, collection, record, record_hash, error, sqlstate) "
						"VALUES ($1, $2, $3::pg_catalog.jsonb, pg_catalog.md5($3), $4, $5) "
						"ON CONFLICT (consumer, record_hash) DO UPDATE SET collection = EXCLUDED.collection, "
						"error = EXCLUDED.error, sqlstate = EXCLUDED.sqlstate, attempts = d.attempts + 1, "
						"failed_at = pg_catalog.now()"
					  : "INSERT INTO sequin_sync.dead_letters AS d (consumer, collection, record_text, record_hash, error, sqlstate) "
						"VALUES ($1, $2, $3, pg_catalog.md5($3), $4, $5) "
						"ON CONFLICT (consumer, record_hash) DO UPDATE SET collection = EXCLUDED.collection, "
						"error = EXCLUDED.error, sqlstate = EXCLUDED.sqlstate, attempts = d.attempts + 1, "
						"failed_at = pg_catalog.now()",
				  5, argtypes, values, nulls, false, 0);
}

} /* namespace */

void
WriteDeadLetters(ApplyBatch *batch)
{
	MemoryContext old = MemoryContextSwitchTo(batch->cxt);
	for (int i = 0; i < batch->nrecords; i++) {
		if (batch->results[i].status != RecordStatus::Failed)
			continue;
		const json::Node *rec = batch->records[i];
		DeadLetterArg a = {batch, i, true, "null"}; /* an item without a record */
		if (rec != nullptr) {
			/* A record that cannot be decoded is kept as it came (Document::SourceText). */
			bool undecodable = batch->doc->FindBadString(rec) != nullptr;
			const char *text;
			size_t len;
			if (!(undecodable ? batch->doc->SourceText(rec, &text, &len) : batch->doc->Serialize(rec, &text, &len)))
				ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
			a.as_jsonb = !undecodable;
			a.text = pnstrdup(text, len);
		}
		/* A record jsonb cannot hold (\u0000, nesting too deep) is kept as its JSON text. */
		ErrorData *err = a.as_jsonb ? RunProtected(DeadLetterStep, &a, batch->cxt) : nullptr;
		if (!a.as_jsonb || err != nullptr) {
			a.as_jsonb = false;
			DeadLetterStep(&a);
		}
		batch->counts.dead_lettered++;
	}
	MemoryContextSwitchTo(old);
}

int64
PruneTombstones()
{
	if (tombstone_retention_s <= 0)
		return 0;
	Oid argtypes[1] = {FLOAT8OID};
	Datum values[1] = {Float8GetDatum((double) tombstone_retention_s)};
	SpiExec("DELETE FROM sequin_sync.tombstones "
			"WHERE deleted_at < pg_catalog.now() - pg_catalog.make_interval(secs => $1)",
			1, argtypes, values, nullptr, false, 0);
	return (int64) SPI_processed;
}

} /* namespace sequin_sync */
