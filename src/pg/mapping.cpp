/*
 * mapping.cpp - checks a mapping against the catalog and resolves each column's source and
 * conversion (see mapping.hpp).  Every refusal names the table and the column and says how to
 * fix it: these are the errors users meet first.
 */
#include <new>
#include <string_view>

#include "core/batch_prep.hpp"
#include "core/protocol.hpp"
#include "core/record.hpp"

extern "C" {
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/skey.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "catalog/catalog.h"
#include "catalog/index.h"
#include "catalog/pg_index.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/primnodes.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "storage/lmgr.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"
}

#include "pg/mapping.hpp"
#include "pg/owned.hpp"

namespace sequin_sync {

namespace {

/* The record's standard fields, filled into columns of the same name. */
struct StandardColumn {
	const char *name;
	const char *path;
	const char *alt_path;
};

const StandardColumn kStandardColumns[] = {
	{"id", "id", nullptr},
	{"upstream_id", "upstream_id", nullptr},
	{"collection_id", "collection_id", "collection_slug"},
	{"collection_slug", "collection_slug", "collection_id"},
	{"provider", "provider", nullptr},
	{"updated_idx", "updated_idx", nullptr},
	{"sync_id", "sync.id", "sync_id"},
	{"sync_external_id", "sync.external_id", "sync_external_id"},
	{"sync_metadata", "sync.metadata", "sync_metadata"},
	{"inserted_at", "inserted_at", "created_at"},
	{"upstream_created_at", "upstream_created_at", nullptr},
	{"upstream_updated_at", "upstream_updated_at", nullptr},
	{"stream_id", "stream_id", nullptr},
	{"resource_id", "resource_id", nullptr},
	{"data", "data", nullptr},
};

const StandardColumn *
FindStandardColumn(const char *name)
{
	for (const StandardColumn &std_col : kStandardColumns)
		if (strcmp(std_col.name, name) == 0)
			return &std_col;
	return nullptr;
}

/* Looks up an override for a column in the columns jsonb; *found tells whether it has one. */
JsonbValue *
FindOverride(Jsonb *columns, const char *name, bool *found)
{
	*found = false;
	if (columns == nullptr)
		return nullptr;
	JsonbValue key;
	key.type = jbvString;
	key.val.string.val = const_cast<char *>(name);
	key.val.string.len = strlen(name);
	JsonbValue *v = findJsonbValueFromContainer(&columns->root, JB_FOBJECT, &key);
	*found = v != nullptr;
	return v;
}

/* A dotted path: non-empty segments of printable characters. */
bool
ValidPath(const char *path)
{
	if (*path == '\0')
		return false;
	bool segment_empty = true;
	for (const char *p = path; *p; p++) {
		if (*p == '.') {
			if (segment_empty)
				return false;
			segment_empty = true;
		} else if ((unsigned char) *p < 0x20) {
			return false;
		} else {
			segment_empty = false;
		}
	}
	return !segment_empty;
}

/*
 * Checks the columns argument before any column is resolved: an object whose values are
 * strings (paths) or null, naming existing, writable columns.
 */
void
CheckOverrides(Relation rel, Protocol protocol, const AttrNumber *keys, int nkeys, Jsonb *columns,
			   const char *display_name)
{
	bool stream = protocol == Protocol::Stream;
	const char *example = stream ? "{\"total\": \"record.amount\", \"notes\": null}"
								 : "{\"plan_amount\": \"data.plan.amount\", \"notes\": null}";
	if (columns == nullptr)
		return;
	if (!JB_ROOT_IS_OBJECT(columns) || JB_ROOT_IS_SCALAR(columns))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("columns must be a JSON object"),
				 errdetail("It maps column names to dotted %s paths or null, e.g. %s.", stream ? "message" : "record", example)));

	JsonbIterator *it = JsonbIteratorInit(&columns->root);
	JsonbValue v;
	JsonbIteratorToken tok;
	char *key = nullptr;
	TupleDesc tupdesc = RelationGetDescr(rel);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE) {
		if (tok == WJB_KEY) {
			key = pnstrdup(v.val.string.val, v.val.string.len);
			continue;
		}
		if (tok != WJB_VALUE || key == nullptr) /* an object's values always follow a key */
			continue;
		if (v.type != jbvString && v.type != jbvNull)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid source for column \"%s\" in columns", key),
					 errdetail("Each value must be a dotted %s path such as %s, or null to never write the column.",
							   stream ? "message" : "record", stream ? "\"record.amount\" or \"metadata.commit_timestamp\"" : "\"data.plan.amount\"")));
		if (v.type == jbvString) {
			char *path = pnstrdup(v.val.string.val, v.val.string.len);
			if (!ValidPath(path))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid %s path \"%s\" for column \"%s\"", stream ? "message" : "record", path, key),
						 stream ? errdetail("A path names message fields separated by dots, such as \"record.amount\", \"metadata.commit_timestamp\" or \"action\".")
								: errdetail("A path names record fields separated by dots, such as \"data.plan.amount\" or \"sync.external_id\".")));
		}
		int attno = -1;
		for (int i = 0; i < tupdesc->natts; i++) {
			Form_pg_attribute att = TupleDescAttr(tupdesc, i);
			if (!att->attisdropped && strcmp(NameStr(att->attname), key) == 0) {
				attno = i;
				break;
			}
		}
		if (attno < 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("column \"%s\" of table %s does not exist", key, display_name),
					 errdetail("The columns argument gives a source for it."),
					 errhint("Column names in columns must match the table's columns exactly.")));
		Form_pg_attribute att = TupleDescAttr(tupdesc, attno);
		bool is_key = false;
		for (int k = 0; k < nkeys; k++)
			is_key |= keys[k] == att->attnum;
		if (stream && (is_key || strcmp(key, "sequin_version") == 0 || strcmp(key, "deleted") == 0))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("column \"%s\" cannot be remapped", key),
					 errdetail("The primary key comes from the record's fields of the same names, sequin_version from the message's commit_lsn and commit_idx, and deleted from its action: the key, the version guard and deletes depend on them."),
					 errhint("Remove \"%s\" from columns.", key)));
		if (!stream && (strcmp(key, "id") == 0 || strcmp(key, "updated_idx") == 0 || strcmp(key, "deleted") == 0))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("column \"%s\" cannot be remapped", key),
					 errdetail("id, updated_idx and deleted always come from the record's standard fields: the key, the version guard and deletes depend on them."),
					 errhint("Remove \"%s\" from columns.", key)));
		if (v.type == jbvString && (att->attgenerated || att->attidentity))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("column \"%s\" of table %s cannot be written", key, display_name),
					 errdetail("%s", att->attgenerated ? "It is a generated column." : "It is an identity column."),
					 errhint("Remove \"%s\" from columns.", key)));
	}
}

/* The unique, non-partial, immediate index on exactly the id column that ON CONFLICT needs. */
bool
HasUniqueIndexOn(Relation rel, AttrNumber attnum)
{
	List *indexes = RelationGetIndexList(rel);
	ListCell *lc;
	bool found = false;
	foreach (lc, indexes) {
		Oid indexoid = lfirst_oid(lc);
		HeapTuple tup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(indexoid));
		if (!HeapTupleIsValid(tup))
			continue;
		Form_pg_index idx = (Form_pg_index) GETSTRUCT(tup);
		if (idx->indisunique && idx->indimmediate && idx->indisvalid && idx->indnkeyatts == 1 &&
			idx->indkey.values[0] == attnum && heap_attisnull(tup, Anum_pg_index_indpred, nullptr) &&
			heap_attisnull(tup, Anum_pg_index_indexprs, nullptr))
			found = true;
		ReleaseSysCache(tup);
		if (found)
			break;
	}
	list_free(indexes);
	return found;
}

/*
 * The table's primary key columns (at most INDEX_MAX_KEYS), when it has one that ON CONFLICT can
 * use: valid, immediate, on plain columns.  0 when it has none.
 */
int
PrimaryKey(Relation rel, AttrNumber *attnums)
{
	List *indexes = RelationGetIndexList(rel);
	ListCell *lc;
	int n = 0;
	foreach (lc, indexes) {
		HeapTuple tup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(lfirst_oid(lc)));
		if (!HeapTupleIsValid(tup))
			continue;
		Form_pg_index idx = (Form_pg_index) GETSTRUCT(tup);
		if (idx->indisprimary && idx->indimmediate && idx->indisvalid &&
			heap_attisnull(tup, Anum_pg_index_indexprs, nullptr)) {
			for (int k = 0; k < idx->indnkeyatts; k++)
				attnums[n++] = idx->indkey.values[k];
		}
		ReleaseSysCache(tup);
		if (n > 0)
			break;
	}
	list_free(indexes);
	return n;
}

void
CheckPrivileges(Oid relid, Oid owner, bool hard, const char *display_name)
{
	AclMode needed[] = {ACL_SELECT, ACL_INSERT, ACL_UPDATE, ACL_DELETE};
	const char *names[] = {"SELECT", "INSERT", "UPDATE", "DELETE"};
	int count = hard ? 4 : 3;
	for (int i = 0; i < count; i++) {
		if (pg_class_aclcheck(relid, owner, needed[i]) != ACLCHECK_OK)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied for table %s", display_name),
					 errdetail("Role \"%s\" has no %s privilege on it; records are applied with the privileges of the role that mapped the collection, which needs SELECT, INSERT and UPDATE%s.",
							   GetUserNameFromId(owner, false), names[i],
							   hard ? " and, for hard deletes, DELETE" : ""),
					 errhint("GRANT %s ON %s TO %s, or map the collection as a role that has it.",
							 names[i], display_name, quote_identifier(GetUserNameFromId(owner, false)))));
	}
}

/* How Citus distributes a table: pg_dist_partition's partmethod and distribution column. */
struct CitusDistribution {
	char		method;			/* 'h' hash, 'a' append, 'r' range, 'n' none (reference, single
								 * shard, Citus local); 0: not a Citus table */
	AttrNumber	column;			/* the distribution column; InvalidAttrNumber when none or unknown */
};

AttrNumber
CatalogColumn(TupleDesc desc, const char *name)
{
	for (int i = 0; i < desc->natts; i++) {
		Form_pg_attribute att = TupleDescAttr(desc, i);
		if (!att->attisdropped && strcmp(NameStr(att->attname), name) == 0)
			return att->attnum;
	}
	return InvalidAttrNumber;
}

/*
 * Reads the table's row of Citus' catalog pg_catalog.pg_dist_partition, when that catalog exists:
 * sequin_sync neither links to Citus nor needs it, so the catalog and its columns are looked up
 * by name at run time.  The distribution column is stored as a Var node's text (what Citus'
 * column_to_column_name() reads); anything else leaves it unknown.
 */
CitusDistribution
ReadCitusDistribution(Oid relid)
{
	CitusDistribution dist = {0, InvalidAttrNumber};
	Oid catalog = get_relname_relid("pg_dist_partition", PG_CATALOG_NAMESPACE);
	if (!OidIsValid(catalog))
		return dist;
	Relation rel = table_open(catalog, AccessShareLock);
	TupleDesc desc = RelationGetDescr(rel);
	AttrNumber relid_att = CatalogColumn(desc, "logicalrelid");
	AttrNumber method_att = CatalogColumn(desc, "partmethod");
	AttrNumber key_att = CatalogColumn(desc, "partkey");
	if (relid_att != InvalidAttrNumber && method_att != InvalidAttrNumber && key_att != InvalidAttrNumber) {
		Oid index = get_relname_relid("pg_dist_partition_logical_relid_index", PG_CATALOG_NAMESPACE);
		ScanKeyData key;
		ScanKeyInit(&key, relid_att, BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(relid));
		SysScanDesc scan = systable_beginscan(rel, index, OidIsValid(index), nullptr, 1, &key);
		HeapTuple tup = systable_getnext(scan);
		if (HeapTupleIsValid(tup)) {
			bool isnull;
			Datum method = heap_getattr(tup, method_att, desc, &isnull);
			dist.method = isnull ? 'n' : DatumGetChar(method);
			Datum partkey = heap_getattr(tup, key_att, desc, &isnull);
			if (!isnull) {
				char *keytext = TextDatumGetCString(partkey);
				Node *node = *keytext != '\0' ? (Node *) stringToNode(keytext) : nullptr;
				if (node != nullptr && IsA(node, Var))
					dist.column = ((Var *) node)->varattno;
			}
		}
		systable_endscan(scan);
	}
	table_close(rel, AccessShareLock);
	return dist;
}

/*
 * A Citus table works as a target when Citus can run the engine's upsert on the key: a
 * hash-distributed table must be distributed by it (Citus enforces a unique index only when it
 * includes the distribution column), reference, single-shard and Citus local tables always
 * can; append- and range-distributed tables cannot take INSERT ... SELECT ... ON CONFLICT.
 * Checked before the key's unique index, whose absence would otherwise be the error.
 */
void
CheckCitusTable(Relation rel, const ResolvedMapping *m)
{
	CitusDistribution dist = ReadCitusDistribution(RelationGetRelid(rel));
	const MappedColumn *key = &m->columns[m->id_col];
	bool by_key = false;
	for (int k = 0; k < m->nkeys; k++)
		by_key |= m->columns[m->key_cols[k]].attnum == dist.column;
	if (dist.method == 'h' && dist.column != InvalidAttrNumber && !by_key) {
		const char *column = dist.column > 0 && dist.column <= RelationGetDescr(rel)->natts
								 ? NameStr(TupleDescAttr(RelationGetDescr(rel), dist.column - 1)->attname)
								 : "?";
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TABLE_DEFINITION),
				 errmsg("table %s is distributed by column \"%s\", not by its key \"%s\"", m->display_name, column,
						key->name),
				 errdetail("Records are upserted on \"%s\", and Citus enforces a unique key only when it includes the distribution column.",
						   key->name),
				 errhint("Distribute the table by its key (SELECT alter_distributed_table(%s, distribution_column => %s)), or make it a reference table.",
						 quote_literal_cstr(m->qualified_name), quote_literal_cstr(key->name))));
	}
	if (dist.method == 'a' || dist.method == 'r')
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot map a collection to %s-distributed table %s", dist.method == 'a' ? "append" : "range",
						m->display_name),
				 errdetail("Records are upserted with INSERT ... SELECT ... ON CONFLICT, which Citus runs on hash-distributed, reference, single-shard and Citus local tables only."),
				 errhint("Map the collection to a table distributed by its key: SELECT create_distributed_table('<table>', %s).",
						 quote_literal_cstr(key->name))));
}

void
ResolveConversion(MappedColumn *col)
{
	Oid base = col->type;
	int32 base_typmod = col->typmod;
	base = getBaseTypeAndTypmod(base, &base_typmod);
	col->base_type = base;
	col->is_domain = base != col->type;
	char category;
	bool preferred;
	get_type_category_preferred(base, &category, &preferred);
	col->string_like = category == TYPCATEGORY_STRING;

	if (base == JSONOID || base == JSONBOID)
		col->convert = ConvertKind::Json;
	else if (type_is_array(base)) {
		col->convert = ConvertKind::Array;
		Oid elem = getBaseType(get_element_type(base));
		col->json_elements = elem == JSONOID || elem == JSONBOID;
	}
	else if (base == TIMESTAMPTZOID)
		col->convert = ConvertKind::Timestamptz;
	else if (base == TIMESTAMPOID)
		col->convert = ConvertKind::Timestamp;
	else if (base == DATEOID)
		col->convert = ConvertKind::Date;
	else
		col->convert = ConvertKind::Scalar;

	getTypeInputInfo(col->type, &col->input_func, &col->ioparam);
	fmgr_info(col->input_func, &col->input);
	get_typlenbyvalalign(col->type, &col->typlen, &col->typbyval, &col->typalign);
	col->array_type = get_array_type(col->type);
	col->pass_as_text = col->convert == ConvertKind::Array || !OidIsValid(col->array_type);
}

/*
 * The mapping's FieldMatcher over its DataField columns' names, owned by the current memory
 * context (the mapping's): the names are normalised here, once per mapping, not per record.
 */
void
BuildFieldMatcher(ResolvedMapping *m)
{
	std::string_view *names = (std::string_view *) palloc(sizeof(std::string_view) * Max(m->nfields, 1));
	for (int i = 0; i < m->ncolumns; i++)
		if (m->columns[i].source == SourceKind::DataField)
			names[m->columns[i].field_slot] = std::string_view(m->columns[i].name);
	m->fields = NewOwnedBy<record::FieldMatcher>(CurrentMemoryContext);
	if (!m->fields->Build(names, m->nfields))
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	/*
	 * The prefetch thread's copy of these lookups.  Without one (out of memory) the engine
	 * finds every value itself, as for records nobody prepared.
	 */
	m->locator = nullptr;
	{
		prep::ColumnSpec *specs = (prep::ColumnSpec *) palloc(sizeof(prep::ColumnSpec) * Max(m->ncolumns, 1));
		for (int i = 0; i < m->ncolumns; i++) {
			const MappedColumn *col = &m->columns[i];
			specs[i] = prep::ColumnSpec();
			if (col->source == SourceKind::Path) {
				specs[i].source = prep::Source::Path;
				specs[i].path = col->path;
				specs[i].alt_path = col->alt_path;
			} else if (col->source == SourceKind::DataField) {
				specs[i].source = prep::Source::DataField;
				specs[i].field_slot = col->field_slot;
			}
		}
		prep::LocatorRef *ref = NewOwnedBy<prep::LocatorRef>(CurrentMemoryContext);
		if (prep::MakeLocator(specs, m->ncolumns, names, m->nfields, ref))
			m->locator = ref;
		pfree(specs);
	}
	pfree(names);
}

} /* namespace */

ResolvedMapping *
ResolveMapping(Oid relid, Protocol protocol, const char *delete_mode, Jsonb *columns, Oid owner)
{
	bool stream = protocol == Protocol::Stream;
	if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(owner)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("the role that mapped this collection no longer exists"),
				 errdetail("Records are applied with the privileges of the mapping's owner (role OID %u), which was dropped.", owner),
				 errhint("Map the collection again as an existing role, then run sequin_sync.retry_dead_letters().")));

	ResolvedMapping *m = (ResolvedMapping *) palloc0(sizeof(ResolvedMapping));
	m->relid = relid;
	m->protocol = protocol;
	m->owner = owner;
	m->hard_delete = strcmp(delete_mode, "hard") == 0;

	Relation rel = try_relation_open(relid, AccessShareLock);
	if (rel == nullptr)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("target table with OID %u does not exist", relid),
				 errhint("The mapped table was dropped: map the collection to an existing table, or unmap it.")));

	char *nspname = get_namespace_name(RelationGetNamespace(rel));
	m->qualified_name = quote_qualified_identifier(nspname, RelationGetRelationName(rel));
	m->display_name = m->qualified_name;

	char relkind = rel->rd_rel->relkind;
	if (relkind != RELKIND_RELATION && relkind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table", m->display_name),
				 errdetail("Collections can be mapped to ordinary and partitioned tables only.")));
	if (rel->rd_rel->relpersistence == RELPERSISTENCE_TEMP)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("cannot map a collection to temporary table \"%s\"", RelationGetRelationName(rel)),
				 errdetail("The background worker cannot see another session's temporary tables.")));
	if (IsCatalogRelation(rel) || strcmp(nspname, "sequin_sync") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("cannot map a collection to %s", m->display_name),
				 errdetail("System catalogs and sequin_sync's own tables cannot be targets.")));

	CheckPrivileges(relid, owner, m->hard_delete, m->display_name);
	AttrNumber pk[INDEX_MAX_KEYS];
	int npk = stream ? PrimaryKey(rel, pk) : 0;
	if (stream && npk == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TABLE_DEFINITION),
				 errmsg("table %s has no primary key", m->display_name),
				 errdetail("Sequin Stream messages are upserted on the target's primary key, filled from the record's fields of the same names."),
				 errhint("Add the source table's key: ALTER TABLE %s ADD PRIMARY KEY (<key columns>).", m->display_name)));
	CheckOverrides(rel, protocol, pk, npk, columns, m->display_name);

	TupleDesc tupdesc = RelationGetDescr(rel);
	m->columns = (MappedColumn *) palloc0(sizeof(MappedColumn) * tupdesc->natts);
	m->id_col = m->idx_col = m->deleted_col = -1;
	m->key_cols = (int *) palloc(sizeof(int) * Max(npk, 1));

	for (int i = 0; i < tupdesc->natts; i++) {
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);
		if (att->attisdropped || att->attgenerated || att->attidentity)
			continue;
		const char *name = NameStr(att->attname);
		bool has_override;
		JsonbValue *ov = FindOverride(columns, name, &has_override);
		if (has_override && ov->type == jbvNull)
			continue; /* never written */

		MappedColumn *col = &m->columns[m->ncolumns];
		col->name = pstrdup(name);
		col->attnum = att->attnum;
		col->type = att->atttypid;
		col->typmod = att->atttypmod;
		col->key_slot = -1;
		for (int k = 0; k < npk; k++)
			if (pk[k] == att->attnum)
				col->key_slot = k;
		if (stream) {
			/* the message's fields: record.<column> unless columns says otherwise */
			if (has_override) {
				col->source = SourceKind::Path;
				col->path = pnstrdup(ov->val.string.val, ov->val.string.len);
			} else if (col->key_slot < 0 && strcmp(name, "sequin_version") == 0) {
				col->source = SourceKind::Version;
			} else if (col->key_slot < 0 && strcmp(name, "deleted") == 0) {
				col->source = SourceKind::Deleted;
			} else {
				col->source = SourceKind::DataField;
				col->field_slot = m->nfields++;
			}
			col->from_data = col->source == SourceKind::DataField ||
				(col->source == SourceKind::Path &&
				 (strcmp(col->path, "record") == 0 || strncmp(col->path, "record.", 7) == 0));
		} else if (has_override) {
			col->source = SourceKind::Path;
			col->path = pnstrdup(ov->val.string.val, ov->val.string.len);
		} else if (strcmp(name, "deleted") == 0) {
			col->source = SourceKind::Deleted;
		} else if (const StandardColumn *std_col = FindStandardColumn(name)) {
			col->source = SourceKind::Path;
			col->path = pstrdup(std_col->path);
			col->alt_path = std_col->alt_path ? pstrdup(std_col->alt_path) : nullptr;
		} else {
			col->source = SourceKind::DataField;
			col->field_slot = m->nfields++;
		}
		if (!stream)
			col->from_data = col->source == SourceKind::DataField ||
				(col->source == SourceKind::Path &&
				 (strcmp(col->path, "data") == 0 || strncmp(col->path, "data.", 5) == 0));
		ResolveConversion(col);

		if (stream) {
			if (col->key_slot >= 0)
				m->key_cols[col->key_slot] = m->ncolumns;
			else if (col->source == SourceKind::Version)
				m->idx_col = m->ncolumns;
			else if (col->source == SourceKind::Deleted)
				m->deleted_col = m->ncolumns;
		} else if (strcmp(name, "id") == 0)
			m->id_col = m->ncolumns;
		else if (strcmp(name, "updated_idx") == 0)
			m->idx_col = m->ncolumns;
		else if (strcmp(name, "deleted") == 0)
			m->deleted_col = m->ncolumns;
		m->ncolumns++;
	}
	if (stream) {
		m->nkeys = npk;
		m->id_col = m->key_cols[0];
		if (m->idx_col < 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("table %s has no column \"sequin_version\"", m->display_name),
					 errdetail("The version guard keeps each change's commit_lsn * 2^32 + commit_idx there and only ever replaces a row with a newer version."),
					 errhint("Add it: ALTER TABLE %s ADD COLUMN sequin_version numeric.", m->display_name)));
		if (m->columns[m->idx_col].base_type != NUMERICOID)
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("column \"sequin_version\" of table %s has type %s", m->display_name,
							format_type_be(m->columns[m->idx_col].type)),
					 errdetail("Versions are commit_lsn * 2^32 + commit_idx, up to 96 bits: only numeric holds them exactly."),
					 errhint("Use numeric: ALTER TABLE %s ALTER COLUMN sequin_version TYPE numeric.", m->display_name)));
	} else if (m->id_col >= 0) {
		m->nkeys = 1;
		m->key_cols[0] = m->id_col;
		m->columns[m->id_col].key_slot = 0;
	}

	if (!stream && m->id_col < 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("table %s has no column \"id\"", m->display_name),
				 errdetail("The record's id is the key of the target table."),
				 errhint("Add it: ALTER TABLE %s ADD COLUMN id text PRIMARY KEY.", m->display_name)));
	CheckCitusTable(rel, m);
	if (!stream && !HasUniqueIndexOn(rel, m->columns[m->id_col].attnum))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_COLUMN_REFERENCE),
				 errmsg("column \"id\" of table %s has no unique index", m->display_name),
				 errdetail("Records are upserted on id, which needs a unique, non-partial index on that column alone."),
				 errhint("Make it the primary key: ALTER TABLE %s ADD PRIMARY KEY (id).", m->display_name)));
	if (!stream && m->idx_col < 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("table %s has no column \"updated_idx\"", m->display_name),
				 errdetail("The version guard keeps each record's updated_idx there and only ever replaces a row with a newer version."),
				 errhint("Add it: ALTER TABLE %s ADD COLUMN updated_idx bigint.", m->display_name)));
	if (!stream) {
		MappedColumn *idx = &m->columns[m->idx_col];
		char category;
		bool preferred;
		get_type_category_preferred(idx->base_type, &category, &preferred);
		if (category != TYPCATEGORY_NUMERIC)
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("column \"updated_idx\" of table %s has type %s", m->display_name,
							format_type_be(idx->type)),
					 errdetail("The version guard compares versions as numbers."),
					 errhint("Use bigint: ALTER TABLE %s ALTER COLUMN updated_idx TYPE bigint.", m->display_name)));
	}
	if (!m->hard_delete) {
		if (m->deleted_col < 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("table %s has no column \"deleted\"", m->display_name),
					 stream ? errdetail("Soft deletes keep a deleted row, with deleted = true.")
							: errdetail("Soft deletes keep a deleted record's row with deleted = true."),
					 errhint("Add it (ALTER TABLE %s ADD COLUMN deleted boolean), or map with delete_mode => 'hard'.",
							 m->display_name)));
		if (m->columns[m->deleted_col].base_type != BOOLOID)
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("column \"deleted\" of table %s has type %s", m->display_name,
							format_type_be(m->columns[m->deleted_col].type)),
					 stream ? errdetail("Soft deletes store whether the row was deleted there.")
							: errdetail("Soft deletes store the record's deleted flag there."),
					 errhint("Use boolean: ALTER TABLE %s ALTER COLUMN deleted TYPE boolean USING deleted::boolean.",
							 m->display_name)));
	}

	if (m->hard_delete) {
		m->key_output = (FmgrInfo *) palloc0(sizeof(FmgrInfo) * m->nkeys);
		for (int k = 0; k < m->nkeys; k++) {
			const MappedColumn *keycol = &m->columns[m->key_cols[k]];
			Oid outfunc;
			bool varlena;
			getTypeOutputInfo(keycol->pass_as_text ? TEXTOID : keycol->type, &outfunc, &varlena);
			fmgr_info(outfunc, &m->key_output[k]);
		}
	}
	BuildFieldMatcher(m);
	relation_close(rel, NoLock);
	return m;
}

/* ---- the backend's resolved mappings, kept across batches ---- */

namespace {

struct CachedMapping {
	Oid			relid;			/* the key: the mapping as sequin_sync.mappings has it */
	Protocol	protocol;
	Oid			owner;
	char	   *delete_mode;
	Jsonb	   *columns;		/* NULL when the mapping has none */
	bool		valid;			/* cleared by the invalidation callbacks */
	int			ntypes;
	uint32	   *type_hashes;	/* TYPEOID hash values of the columns' types and base types */
	ResolvedMapping *map;
	MemoryContext cxt;			/* holds all of the above */
	CachedMapping *next;
};

/* Mappings a backend keeps; beyond it they all go (a worker serves one consumer's few). */
constexpr int kMaxCachedMappings = 64;

CachedMapping *cached_mappings = nullptr;
int ncached_mappings = 0;
bool callbacks_registered = false;
/* Counts invalidations: one arriving while a mapping is being resolved may concern it. */
uint64 invalidations = 0;

void
InvalidateRelation(Datum arg, Oid relid)
{
	invalidations++;
	for (CachedMapping *e = cached_mappings; e != nullptr; e = e->next)
		if (relid == InvalidOid || e->relid == relid)
			e->valid = false;
}

/* Roles, memberships, schemas: rare, so every kept mapping goes. */
void
InvalidateAll(Datum arg, int cacheid, uint32 hashvalue)
{
	invalidations++;
	for (CachedMapping *e = cached_mappings; e != nullptr; e = e->next)
		e->valid = false;
}

void
InvalidateType(Datum arg, int cacheid, uint32 hashvalue)
{
	invalidations++;
	for (CachedMapping *e = cached_mappings; e != nullptr; e = e->next)
		for (int i = 0; i < e->ntypes && e->valid; i++)
			if (hashvalue == 0 || e->type_hashes[i] == hashvalue)
				e->valid = false;
}

bool
SameMapping(const CachedMapping *e, Oid relid, Protocol protocol, const char *delete_mode, Jsonb *columns, Oid owner)
{
	if (e->relid != relid || e->protocol != protocol || e->owner != owner || strcmp(e->delete_mode, delete_mode) != 0)
		return false;
	if (e->columns == nullptr || columns == nullptr)
		return e->columns == columns;
	return VARSIZE(e->columns) == VARSIZE(columns) && memcmp(e->columns, columns, VARSIZE(columns)) == 0;
}

/*
 * Unlinks the kept mappings that are invalid (all of them with `all`); each one's context moves
 * under batch_cxt, so an earlier group of the same batch may still read it.
 */
void
Retire(MemoryContext batch_cxt, bool all)
{
	CachedMapping **link = &cached_mappings;
	while (*link != nullptr) {
		CachedMapping *e = *link;
		if (e->valid && !all) {
			link = &e->next;
			continue;
		}
		*link = e->next;
		ncached_mappings--;
		MemoryContextSetParent(e->cxt, batch_cxt);
	}
}

} /* namespace */

ResolvedMapping *
ResolveMappingCached(Oid relid, Protocol protocol, const char *delete_mode, Jsonb *columns, Oid owner,
					 MemoryContext batch_cxt)
{
	if (!callbacks_registered) {
		CacheRegisterRelcacheCallback(InvalidateRelation, (Datum) 0);
		CacheRegisterSyscacheCallback(TYPEOID, InvalidateType, (Datum) 0);
		CacheRegisterSyscacheCallback(AUTHOID, InvalidateAll, (Datum) 0);
		CacheRegisterSyscacheCallback(AUTHMEMROLEMEM, InvalidateAll, (Datum) 0);
		CacheRegisterSyscacheCallback(NAMESPACEOID, InvalidateAll, (Datum) 0);
		callbacks_registered = true;
	}
	/*
	 * The lock first: taking it processes the invalidations of everything committed before,
	 * so a kept mapping that is still valid afterwards is what resolving again would give.
	 * (When this transaction already holds it, no ALTER can have committed since, and a GRANT
	 * or REVOKE is seen by the next transaction, as resolving again would see it; a table
	 * that no longer exists is locked by OID all the same, and its DROP invalidated it.)
	 */
	LockRelationOid(relid, AccessShareLock);
	Retire(batch_cxt, false);
	for (CachedMapping *e = cached_mappings; e != nullptr; e = e->next)
		if (SameMapping(e, relid, protocol, delete_mode, columns, owner))
			return e->map;
	if (ncached_mappings >= kMaxCachedMappings)
		Retire(batch_cxt, true);

	/* Resolved under batch_cxt: an error drops the half-built mapping with the batch. */
	MemoryContext cxt = AllocSetContextCreate(batch_cxt, "sequin_sync mapping", ALLOCSET_SMALL_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	uint64 before = invalidations;
	CachedMapping *e = (CachedMapping *) palloc0(sizeof(CachedMapping));
	e->map = ResolveMapping(relid, protocol, delete_mode, columns, owner);
	e->relid = relid;
	e->protocol = protocol;
	e->owner = owner;
	e->delete_mode = pstrdup(delete_mode);
	if (columns != nullptr) {
		e->columns = (Jsonb *) palloc(VARSIZE(columns));
		memcpy(e->columns, columns, VARSIZE(columns));
	}
	e->type_hashes = (uint32 *) palloc(sizeof(uint32) * 2 * Max(e->map->ncolumns, 1));
	for (int i = 0; i < e->map->ncolumns; i++) {
		const MappedColumn *col = &e->map->columns[i];
		e->type_hashes[e->ntypes++] = GetSysCacheHashValue1(TYPEOID, ObjectIdGetDatum(col->type));
		if (col->base_type != col->type)
			e->type_hashes[e->ntypes++] = GetSysCacheHashValue1(TYPEOID, ObjectIdGetDatum(col->base_type));
	}
	e->cxt = cxt;
	/* Kept only when nothing was invalidated meanwhile; this batch uses it either way. */
	e->valid = invalidations == before;
	MemoryContextSwitchTo(old);

	MemoryContextSetParent(cxt, CacheMemoryContext);
	e->next = cached_mappings;
	cached_mappings = e;
	ncached_mappings++;
	return e->map;
}

} /* namespace sequin_sync */
