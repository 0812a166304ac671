/*
 * convert_kind.hpp - how a JSON value becomes a column's Datum, decided once per column.
 *
 * Only this enum: shared by the Postgres-side mapping (mapping.hpp, MappedColumn::convert) and the
 * Postgres-free record layer (record.hpp), so it includes nothing and is safe on either side of
 * postgres.h.
 */
#ifndef SEQUIN_SYNC_CONVERT_KIND_HPP
#define SEQUIN_SYNC_CONVERT_KIND_HPP

namespace sequin_sync {

enum class ConvertKind {
	Scalar,		/* the type's input function on the JSON scalar's text */
	Json,		/* json/jsonb: any JSON value, serialized */
	Array,		/* an array type: JSON arrays become array literals */
	Timestamptz,/* JSON numbers are Unix epoch seconds */
	Timestamp,	/* JSON numbers are Unix epoch seconds, as UTC wall time */
	Date,		/* JSON numbers are Unix epoch seconds, the UTC date */
};

} /* namespace sequin_sync */

#endif
