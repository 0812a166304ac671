/*
 * mapping.hpp - how a collection's records map onto a target table's columns.
 *
 * ResolveMapping checks a mapping against the catalog and decides, for every column the engine
 * writes, where its value comes from in a record and how it is converted.  map_collection()
 * calls it to refuse a mapping that cannot work; the apply engine resolves it again for every
 * batch through ResolveMappingCached, which keeps the answer until the catalog says the table,
 * its types or roles changed, so both always agree.
 *
 * Postgres-side code: include after the extern "C" block with postgres.h.
 */
#ifndef SEQUIN_SYNC_MAPPING_HPP
#define SEQUIN_SYNC_MAPPING_HPP

#include "core/convert_kind.hpp"
/* core/protocol.hpp (Protocol) is included before postgres.h by the callers */

namespace sequin_sync {

namespace record {
class FieldMatcher; /* core/record.hpp, included before postgres.h by the callers */
}
namespace prep {
struct LocatorRef; /* core/batch_prep.hpp */
}

/* Where a column's value comes from. */
enum class SourceKind {
	Path,		/* a dotted path from the record root (path, else alt_path) */
	DataField,	/* data.<column name>, exactly or else ignoring case and underscores */
	Deleted,	/* the record's validated deleted flag (false when absent); stream: action = delete */
	Version,	/* stream: the message's commit_lsn * 2^32 + commit_idx, NULL for a read */
};

struct MappedColumn {
	char	   *name;			/* column name */
	AttrNumber	attnum;
	Oid			type;			/* the column's type (may be a domain) */
	int32		typmod;
	Oid			base_type;		/* after domains */
	bool		is_domain;
	bool		string_like;	/* type category S: objects and arrays are stored as JSON text */
	bool		json_elements;	/* json[]/jsonb[]: each element is one JSON value */
	ConvertKind convert;
	SourceKind	source;
	char	   *path;			/* SourceKind::Path */
	char	   *alt_path;		/* tried when path is absent; may be NULL */
	bool		from_data;		/* the value is in the record's "data" (a data field, the data
								 * column, a path under data.): a deleted record without data
								 * leaves the column as it is */
	Oid			input_func;
	Oid			ioparam;
	FmgrInfo	input;
	int16		typlen;
	bool		typbyval;
	char		typalign;
	Oid			array_type;		/* array of the column's type, passed to unnest() */
	bool		pass_as_text;	/* no usable array type (arrays of arrays): pass text, cast in SQL */
	int			field_slot;		/* SourceKind::DataField: its slot in the mapping's fields */
	int			key_slot;		/* its place in the key (ResolvedMapping::key_cols), else -1 */
};

struct ResolvedMapping {
	Oid			relid;
	Protocol	protocol;		/* the consumer's: how records name their columns and versions */
	char	   *qualified_name;	/* schema-qualified, quoted */
	char	   *display_name;	/* for messages: the table as the user wrote it */
	bool		hard_delete;
	Oid			owner;
	int			ncolumns;
	MappedColumn *columns;
	int			id_col;			/* v1: the id column (index into columns); stream: key_cols[0] */
	int			idx_col;		/* the version: updated_idx (v1), sequin_version (stream) */
	int			deleted_col;	/* -1 when the table has none (hard delete mode only) */
	/*
	 * The key rows are upserted on: v1's id; a stream mapping's primary key, its columns filled
	 * from the record fields of the same names.  Indexes into columns, in the key's order.
	 */
	int			nkeys;
	int		   *key_cols;
	/*
	 * The names of the DataField columns, normalised once: FieldMatcher::Match finds all of a
	 * record's data fields in one walk (out[field_slot]).  Owned by the mapping's context.
	 */
	record::FieldMatcher *fields;
	int			nfields;
	/*
	 * The same lookups for the prefetch thread (core/batch_prep.hpp), which prepares the next
	 * batch's records with it; a new one whenever the mapping is resolved again.  Owned by the
	 * mapping's context; nullptr when it could not be built.
	 */
	prep::LocatorRef *locator;
	FmgrInfo   *key_output;		/* hard deletes: each key column's output function (the key
								 * of tombstones and advisory locks), nkeys entries */
};

/*
 * Checks the mapping and resolves its columns, allocating in the current memory context.
 * Raises an error (undefined column, missing unique index, privileges of owner, ...) naming the
 * table and column, with a hint, when the mapping cannot work.
 */
ResolvedMapping *ResolveMapping(Oid relid, Protocol protocol, const char *delete_mode, Jsonb *columns, Oid owner);

/*
 * ResolveMapping for the apply engine, kept across batches by this backend: resolving costs
 * catalog lookups and an FmgrInfo per column, and it is the same answer batch after batch.
 * Takes AccessShareLock on the table first (which processes every invalidation committed
 * for it), then returns the kept answer when nothing it depends on has changed since: the
 * table (relcache: ALTER TABLE, indexes, privileges, owner, DROP), its column types, roles
 * and memberships, schemas (syscache callbacks), or the mapping itself (the key is the
 * mapping's table, delete mode, columns and owner).  Otherwise resolves again; errors are
 * ResolveMapping's, and a failed resolution is not kept.  A mapping that is given up stays
 * valid until batch_cxt goes (the batch's context), so a batch never loses its mapping.
 */
ResolvedMapping *ResolveMappingCached(Oid relid, Protocol protocol, const char *delete_mode, Jsonb *columns,
									  Oid owner, MemoryContext batch_cxt);

} /* namespace sequin_sync */

#endif
