/*
 * mapping.hpp - how a collection's records map onto a target table's columns.
 *
 * ResolveMapping checks a mapping against the catalog and decides, for every column the engine
 * writes, where its value comes from in a record and how it is converted.  map_collection()
 * calls it to refuse a mapping that cannot work; the apply engine calls it again for every call
 * (the table may have changed since), so both always agree.
 *
 * Postgres-side code: include after the extern "C" block with postgres.h.
 */
#ifndef SEQUIN_SYNC_MAPPING_HPP
#define SEQUIN_SYNC_MAPPING_HPP

#include "core/convert_kind.hpp"

namespace sequin_sync {

/* Where a column's value comes from. */
enum class SourceKind {
	Path,		/* a dotted path from the record root (path, else alt_path) */
	DataField,	/* data.<column name>, exactly or else ignoring case and underscores */
	Deleted,	/* the record's validated deleted flag (false when absent) */
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
};

struct ResolvedMapping {
	Oid			relid;
	char	   *qualified_name;	/* schema-qualified, quoted */
	char	   *display_name;	/* for messages: the table as the user wrote it */
	bool		hard_delete;
	Oid			owner;
	int			ncolumns;
	MappedColumn *columns;
	int			id_col;			/* index into columns */
	int			idx_col;
	int			deleted_col;	/* -1 when the table has none (hard delete mode only) */
};

/*
 * Checks the mapping and resolves its columns, allocating in the current memory context.
 * Raises an error (undefined column, missing unique index, privileges of owner, ...) naming the
 * table and column, with a hint, when the mapping cannot work.
 */
ResolvedMapping *ResolveMapping(Oid relid, const char *delete_mode, Jsonb *columns, Oid owner);

} /* namespace sequin_sync */

#endif
