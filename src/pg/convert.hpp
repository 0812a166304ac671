/*
 * convert.hpp - one JSON value into one column's Datum.
 *
 * Postgres-side code: include after the extern "C" block with postgres.h and mapping.hpp.
 */
#ifndef SEQUIN_SYNC_CONVERT_HPP
#define SEQUIN_SYNC_CONVERT_HPP

#include "core/json_doc.hpp"

namespace sequin_sync {

namespace record {
class ArrayLiteralWriter; /* core/record.hpp, included before postgres.h by the callers */
}

/*
 * The JSON value a column takes from a record (found by record.hpp); nullptr when the record has
 * none.  fields are the record's data fields as the mapping's FieldMatcher found them (one walk
 * per record by the caller), indexed by MappedColumn::field_slot.
 */
const json::Node *FindColumnSource(const json::Document *doc, const json::Node *rec,
								   const json::Node *const *fields, const MappedColumn *col);

/*
 * Converts a JSON value (nullptr = absent) for a column.  For columns passed as text
 * (col->pass_as_text) the result is the validated text literal, else a Datum of the column's
 * type.  Raises the conversion error (the caller names the column) when the value cannot be
 * stored: wrong type, \u0000 in text, out of range, a domain's constraint.  Array columns get
 * their literal from `literals` (the batch's writer, see apply.cpp).
 */
Datum ConvertValue(const MappedColumn *col, json::Document *doc, record::ArrayLiteralWriter *literals,
				   const json::Node *value, bool *isnull);

} /* namespace sequin_sync */

#endif
