/*
 * sql_api.cpp - the SQL-callable functions of schema sequin_sync.
 *
 * Each function checks its arguments and the caller's rights as the caller, then reads and
 * writes sequin_sync's tables as the extension owner (the tables are closed to everyone else),
 * with search_path pinned to pg_catalog, pg_temp.
 */
#include <string>

#include "core/endpoint.hpp"
#include "core/protocol.hpp"
#include "core/json_doc.hpp"

extern "C" {
#include "postgres.h"

#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/lwlock.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "pg/compat.hpp"

PG_FUNCTION_INFO_V1(sequin_sync_create_consumer);
PG_FUNCTION_INFO_V1(sequin_sync_alter_consumer);
PG_FUNCTION_INFO_V1(sequin_sync_drop_consumer);
PG_FUNCTION_INFO_V1(sequin_sync_pause);
PG_FUNCTION_INFO_V1(sequin_sync_resume);
PG_FUNCTION_INFO_V1(sequin_sync_map_collection);
PG_FUNCTION_INFO_V1(sequin_sync_unmap_collection);
PG_FUNCTION_INFO_V1(sequin_sync_apply);
PG_FUNCTION_INFO_V1(sequin_sync_retry_dead_letters);
PG_FUNCTION_INFO_V1(sequin_sync_prune_tombstones);
PG_FUNCTION_INFO_V1(sequin_sync_wake_workers);
}

#include "pg/apply.hpp"
#include "pg/extension.hpp"
#include "pg/security.hpp"
#include "pg/spi.hpp"
#include "pg/mapping.hpp"
#include "pg/settings.hpp"
#include "pg/shmem.hpp"

using namespace sequin_sync;

namespace {

/* Raises a clear error when a required argument is NULL. */
void
RequireArgument(FunctionCallInfo fcinfo, int argno, const char *name)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", name)));
}

constexpr int kMaxBatchSize = 10000;
/* Sequin Stream's limits on a receive (sequin-stream-api.md 1.4): max_batch_size 1..1000, and a
 * wait_for of at least 500 ms when there is one. */
constexpr int kMaxStreamBatchSize = 1000;
constexpr int64 kMinStreamWaitForMs = 500;
constexpr int kMaxWorkers = 64;
constexpr int64 kMaxWaitForMs = 5 * 60 * 1000;

void
CheckConsumerName(const char *name)
{
	size_t len = strlen(name);
	bool ok = len >= 1 && len <= 63 && isalnum((unsigned char) name[0]);
	for (size_t i = 0; ok && i < len; i++) {
		unsigned char c = (unsigned char) name[i];
		ok = isalnum(c) || c == '_' || c == '-' || c == '.';
	}
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid consumer name \"%s\"", name),
				 errdetail("A consumer name has 1 to 63 letters, digits, underscores, hyphens or dots, and starts with a letter or digit."),
				 errhint("Choose a name such as \"stripe_prod\".")));
}

/* An endpoint outside sequin_sync.allowed_hosts is refused, so no role can point a worker anywhere. */
void
CheckAllowedHost(const char *url)
{
	if (EndpointHostAllowed(url, allowed_hosts ? allowed_hosts : ""))
		return;
	char host[1024] = "";
	{
		std::string h;
		if (EndpointHost(url, &h))
			strlcpy(host, h.c_str(), sizeof(host));
	}
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("endpoint host \"%s\" is not allowed", host),
			 errdetail("sequin_sync.allowed_hosts is \"%s\".", allowed_hosts),
			 errhint("Ask a superuser to add the host to sequin_sync.allowed_hosts.")));
}

/*
 * The endpoint, validated and normalized by endpoint.cpp (no Postgres there).  The copy is made
 * before any ereport, so no std::string is alive when the error longjmps.
 */
char *
CheckEndpoint(const char *url)
{
	char reason[256] = "";
	char normalized[2048] = "";
	bool valid = false;
	bool show_url = true;
	size_t len = strlen(url);
	if (len >= sizeof(normalized))
		strlcpy(reason, "the URL is longer than 2047 bytes", sizeof(reason));
	else {
		/* std::string lives only inside this block; no Postgres call can longjmp out of it. */
		std::string norm, error;
		valid = ValidateEndpoint(std::string_view(url, len), &norm, &error);
		if (valid)
			strlcpy(normalized, norm.c_str(), sizeof(normalized));
		else {
			strlcpy(reason, error.c_str(), sizeof(reason));
			show_url = error.find("password") == std::string::npos;
		}
	}
	if (!valid) {
		if (show_url)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid endpoint \"%s\"", url),
					 errdetail("The endpoint is not a usable consumer URL: %s.", reason),
					 errhint("Use the consumer's URL, such as https://api.sequin.io/v1/http-consumers/<consumer-id>.")));
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid endpoint"),
					 errdetail("The endpoint is not a usable consumer URL: %s.", reason),
					 errhint("Pass the API token as the token argument, not in the URL.")));
	}
	CheckAllowedHost(normalized);
	return pstrdup(normalized);
}

void
CheckToken(const char *token)
{
	size_t len = strlen(token);
	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid token"),
				 errdetail("The token is empty."),
				 errhint("Pass the Sequin API token that the consumer accepts.")));
	if (len > 4096)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid token"),
				 errdetail("The token is %zu bytes long; at most 4096 are accepted.", len),
				 errhint("Pass the Sequin API token that the consumer accepts.")));
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char) token[i];
		if (c <= 0x20 || c == 0x7f)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid token"),
					 errdetail("The token contains a space or control character at byte %zu.", i + 1),
					 errhint("Copy the token without surrounding spaces or line breaks.")));
	}
}

void
CheckBatchSize(int32 batch_size, Protocol protocol)
{
	if (batch_size < 1 || batch_size > kMaxBatchSize)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid batch_size %d", batch_size),
				 errdetail("batch_size must be between 1 and %d.", kMaxBatchSize)));
	if (protocol == Protocol::Stream && batch_size > kMaxStreamBatchSize)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid batch_size %d for a Sequin Stream consumer", batch_size),
				 errdetail("Sequin Stream receives at most %d messages per request and refuses a larger max_batch_size.",
						   kMaxStreamBatchSize),
				 errhint("Use batch_size => %d, and workers => 2 or more for more throughput.", kMaxStreamBatchSize)));
}

void
CheckWaitFor(const Interval *wait_for, Protocol protocol)
{
	int64 ms = -1;
	if (wait_for->month == 0 && wait_for->day >= 0 && wait_for->day <= 1)
		ms = (wait_for->time + (int64) wait_for->day * USECS_PER_DAY) / 1000;
	if (ms < 0 || ms > kMaxWaitForMs)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid wait_for %s",
						DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(wait_for)))),
				 errdetail("wait_for, how long the server may hold a request open, must be between 0 and 5 minutes.")));
	if (protocol == Protocol::Stream && ms > 0 && ms < kMinStreamWaitForMs)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid wait_for %s for a Sequin Stream consumer",
						DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(wait_for)))),
				 errdetail("Sequin Stream refuses a wait_for under %d milliseconds; 0 asks without waiting.",
						   (int) kMinStreamWaitForMs),
				 errhint("Use wait_for => '5 seconds', or 0.")));
}

/*
 * The protocol create_consumer and alter_consumer store: the one named, or else the one the
 * endpoint's path names (protocol.hpp, DetectProtocol).
 */
Protocol
ChooseProtocol(const char *name, const char *endpoint, const Protocol *current)
{
	Protocol protocol = Protocol::V1;
	if (name != nullptr) {
		if (!ParseProtocol(name, &protocol))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid protocol \"%s\"", name),
					 errdetail("protocol is \"v1\" (Sequin's record consumers, /v1/http-consumers/<id>) or \"stream\" (Sequin Stream, /api/sequin_streams/<id-or-name>)."),
					 errhint("Pass protocol => 'v1' or protocol => 'stream', or NULL to tell it from the endpoint.")));
		return protocol;
	}
	if (endpoint != nullptr && DetectProtocol(endpoint, &protocol))
		return protocol;
	if (current != nullptr)
		return *current;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("cannot tell the protocol of endpoint \"%s\"", endpoint),
			 errdetail("Its path is neither a Sequin Stream consumer's (/api/sequin_streams/<id-or-name> or /api/http_pull_consumers/<id-or-name>) nor a record consumer's (/v1/http-consumers/<id>)."),
			 errhint("Pass protocol => 'stream' or protocol => 'v1'.")));
	return protocol;
}

Protocol
ConsumerProtocol(const ConsumerInfo *consumer)
{
	return consumer->stream ? Protocol::Stream : Protocol::V1;
}

void
CheckWorkers(int32 workers)
{
	if (workers < 1 || workers > kMaxWorkers)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid workers %d", workers),
				 errdetail("workers must be between 1 and %d.", kMaxWorkers)));
}

void
CheckCollection(const char *collection)
{
	size_t len = strlen(collection);
	bool ok = len > 0 && len <= 255;
	for (size_t i = 0; ok && i < len; i++)
		ok = (unsigned char) collection[i] >= 0x20;
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid collection \"%s\"", collection),
				 errdetail("A collection is the record's collection_id, such as \"stripe:customer\": 1 to 255 printable characters.")));
}

/* A stream message's collection is its source table, "<table_schema>.<table_name>". */
void
CheckStreamCollection(const char *collection)
{
	const char *dot = strchr(collection, '.');
	if (dot == nullptr || dot == collection || dot[1] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid collection \"%s\" for a Sequin Stream consumer", collection),
				 errdetail("A Sequin Stream message's collection is its source table, \"<table_schema>.<table_name>\"."),
				 errhint("Map the source table by its schema and name, such as 'public.orders'.")));
}

const char *
CheckDeleteMode(const char *mode)
{
	if (strcmp(mode, "soft") != 0 && strcmp(mode, "hard") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid delete_mode \"%s\"", mode),
				 errdetail("delete_mode is \"soft\" (keep the row, with deleted = true) or \"hard\" (remove the row)."),
				 errhint("Pass delete_mode => 'soft' or delete_mode => 'hard'.")));
	return mode;
}

/*
 * Runs one statement on sequin_sync's tables as the extension owner.  A change to a consumer's
 * row (wake != NULL) wakes the launcher and that consumer's workers when the transaction
 * commits; mappings are read by every batch and wake nobody.
 */
void
ExecAsOwner(const char *wake, const char *sql, int nargs, const Oid *types, const Datum *values, const char *nulls)
{
	if (wake != nullptr)
		WakeOnCommit(wake);
	RoleSwitch rs;
	BeginAsRole(&rs, ExtensionOwner(), false);
	SpiExec(sql, nargs, types, values, nulls, false, 0);
	EndAsRole(&rs);
}

/* The common start of a function that works on an existing consumer. */
ConsumerInfo *
OpenConsumer(FunctionCallInfo fcinfo, int *nest_level)
{
	RequireArgument(fcinfo, 0, "name");
	*nest_level = BeginSafeSearchPath();
	SpiConnect();
	ConsumerInfo *consumer = LookupConsumer(text_to_cstring(PG_GETARG_TEXT_PP(0)), false);
	CheckConsumerAccess(consumer);
	return consumer;
}

void
CloseConsumer(int nest_level)
{
	SpiFinish();
	EndSafeSearchPath(nest_level);
}

void
SetPaused(FunctionCallInfo fcinfo, bool paused)
{
	int nest_level;
	ConsumerInfo *consumer = OpenConsumer(fcinfo, &nest_level);
	Oid types[2] = {TEXTOID, BOOLOID};
	Datum values[2] = {CStringGetTextDatum(consumer->name), BoolGetDatum(paused)};
	ExecAsOwner(consumer->name, "UPDATE sequin_sync.consumers SET paused = $2, updated_at = pg_catalog.now() WHERE name = $1",
				2, types, values, nullptr);
	CloseConsumer(nest_level);
}

} /* namespace */

extern "C" Datum
sequin_sync_create_consumer(PG_FUNCTION_ARGS)
{
	RequireArgument(fcinfo, 0, "name");
	RequireArgument(fcinfo, 1, "endpoint");
	RequireArgument(fcinfo, 2, "token");
	RequireArgument(fcinfo, 3, "batch_size");
	RequireArgument(fcinfo, 4, "wait_for");
	RequireArgument(fcinfo, 5, "workers");
	char *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char *endpoint = text_to_cstring(PG_GETARG_TEXT_PP(1));
	char *token = text_to_cstring(PG_GETARG_TEXT_PP(2));
	int32 batch_size = PG_GETARG_INT32(3);
	Interval *wait_for = PG_GETARG_INTERVAL_P(4);
	int32 workers = PG_GETARG_INT32(5);
	const char *protocol_name = PG_NARGS() > 6 && !PG_ARGISNULL(6) ? text_to_cstring(PG_GETARG_TEXT_PP(6)) : nullptr;

	CheckConsumerName(name);
	char *normalized = CheckEndpoint(endpoint);
	Protocol protocol = ChooseProtocol(protocol_name, normalized, nullptr);
	CheckToken(token);
	CheckBatchSize(batch_size, protocol);
	CheckWaitFor(wait_for, protocol);
	CheckWorkers(workers);

	int nest_level = BeginSafeSearchPath();
	SpiConnect();
	if (LookupConsumer(name, true) != nullptr)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("consumer \"%s\" already exists", name),
				 errhint("Change it with sequin_sync.alter_consumer(), or choose another name.")));
	Oid types[8] = {TEXTOID, TEXTOID, TEXTOID, INT4OID, INTERVALOID, INT4OID, OIDOID, TEXTOID};
	Datum values[8] = {CStringGetTextDatum(name), CStringGetTextDatum(normalized), CStringGetTextDatum(token),
					   Int32GetDatum(batch_size), IntervalPGetDatum(wait_for), Int32GetDatum(workers),
					   ObjectIdGetDatum(GetUserId()), CStringGetTextDatum(ProtocolName(protocol))};
	/* v1 is the column's default: said only for stream, so tables before 0.3.0 still take a v1 consumer */
	if (protocol == Protocol::Stream)
		ExecAsOwner(name, "INSERT INTO sequin_sync.consumers (name, endpoint, token, batch_size, wait_for, workers, owner, protocol) "
					"VALUES ($1, $2, $3, $4, $5, $6, $7::pg_catalog.regrole, $8)",
					8, types, values, nullptr);
	else
		ExecAsOwner(name, "INSERT INTO sequin_sync.consumers (name, endpoint, token, batch_size, wait_for, workers, owner) "
					"VALUES ($1, $2, $3, $4, $5, $6, $7::pg_catalog.regrole)",
					7, types, values, nullptr);
	CloseConsumer(nest_level);
	PG_RETURN_VOID();
}

extern "C" Datum
sequin_sync_alter_consumer(PG_FUNCTION_ARGS)
{
	char *endpoint = PG_ARGISNULL(1) ? nullptr : CheckEndpoint(text_to_cstring(PG_GETARG_TEXT_PP(1)));
	bool has_protocol = PG_NARGS() > 6 && !PG_ARGISNULL(6);
	const char *protocol_name = has_protocol ? text_to_cstring(PG_GETARG_TEXT_PP(6)) : nullptr;
	if (protocol_name != nullptr)
		(void) ChooseProtocol(protocol_name, nullptr, nullptr);
	if (!PG_ARGISNULL(2))
		CheckToken(text_to_cstring(PG_GETARG_TEXT_PP(2)));
	if (!PG_ARGISNULL(3))
		CheckBatchSize(PG_GETARG_INT32(3), Protocol::V1);
	if (!PG_ARGISNULL(4))
		CheckWaitFor(PG_GETARG_INTERVAL_P(4), Protocol::V1);
	if (!PG_ARGISNULL(5))
		CheckWorkers(PG_GETARG_INT32(5));

	int nest_level;
	ConsumerInfo *consumer = OpenConsumer(fcinfo, &nest_level);
	Protocol current = ConsumerProtocol(consumer);
	/* a new endpoint names its protocol unless protocol does; an endpoint of neither form keeps it */
	Protocol protocol = (protocol_name != nullptr || endpoint != nullptr)
							? ChooseProtocol(protocol_name, endpoint, &current)
							: current;
	Oid types[7] = {TEXTOID, TEXTOID, TEXTOID, INT4OID, INTERVALOID, INT4OID, TEXTOID};
	Datum values[7] = {CStringGetTextDatum(consumer->name),
					   endpoint ? CStringGetTextDatum(endpoint) : (Datum) 0,
					   PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2),
					   PG_ARGISNULL(3) ? (Datum) 0 : PG_GETARG_DATUM(3),
					   PG_ARGISNULL(4) ? (Datum) 0 : PG_GETARG_DATUM(4),
					   PG_ARGISNULL(5) ? (Datum) 0 : PG_GETARG_DATUM(5),
					   CStringGetTextDatum(ProtocolName(protocol))};
	char nulls[8] = "       ";
	nulls[1] = endpoint ? ' ' : 'n';
	for (int i = 2; i <= 5; i++)
		nulls[i] = PG_ARGISNULL(i) ? 'n' : ' ';
	/* protocol is written only when it changes, so tables before 0.3.0 still take the rest */
	ExecAsOwner(consumer->name, protocol != current
				? "UPDATE sequin_sync.consumers SET "
				  "endpoint = COALESCE($2, endpoint), token = COALESCE($3, token), "
				  "batch_size = COALESCE($4, batch_size), wait_for = COALESCE($5, wait_for), "
				  "workers = COALESCE($6, workers), protocol = $7, updated_at = pg_catalog.now() WHERE name = $1 "
				  "RETURNING batch_size, wait_for"
				: "UPDATE sequin_sync.consumers SET "
				  "endpoint = COALESCE($2, endpoint), token = COALESCE($3, token), "
				  "batch_size = COALESCE($4, batch_size), wait_for = COALESCE($5, wait_for), "
				  "workers = COALESCE($6, workers), updated_at = pg_catalog.now() WHERE name = $1 "
				  "RETURNING batch_size, wait_for",
				protocol != current ? 7 : 6, types, values, nulls);
	/* the consumer's settings, new and kept, must suit its protocol (an error undoes the update) */
	if (SPI_processed == 1) {
		bool isnull;
		int32 batch_size = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		Interval *wait_for = DatumGetIntervalP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
		CheckBatchSize(batch_size, protocol);
		CheckWaitFor(wait_for, protocol);
	}
	CloseConsumer(nest_level);
	PG_RETURN_VOID();
}

extern "C" Datum
sequin_sync_drop_consumer(PG_FUNCTION_ARGS)
{
	int nest_level;
	ConsumerInfo *consumer = OpenConsumer(fcinfo, &nest_level);
	Oid types[1] = {TEXTOID};
	Datum values[1] = {CStringGetTextDatum(consumer->name)};
	ExecAsOwner(consumer->name, "DELETE FROM sequin_sync.consumers WHERE name = $1", 1, types, values, nullptr);
	CloseConsumer(nest_level);
	PG_RETURN_VOID();
}

extern "C" Datum
sequin_sync_pause(PG_FUNCTION_ARGS)
{
	SetPaused(fcinfo, true);
	PG_RETURN_VOID();
}

extern "C" Datum
sequin_sync_resume(PG_FUNCTION_ARGS)
{
	SetPaused(fcinfo, false);
	PG_RETURN_VOID();
}

extern "C" Datum
sequin_sync_map_collection(PG_FUNCTION_ARGS)
{
	RequireArgument(fcinfo, 0, "consumer");
	RequireArgument(fcinfo, 1, "collection");
	RequireArgument(fcinfo, 2, "target");
	char *collection = text_to_cstring(PG_GETARG_TEXT_PP(1));
	Oid target = PG_GETARG_OID(2);
	const char *delete_mode = PG_ARGISNULL(3) ? nullptr : CheckDeleteMode(text_to_cstring(PG_GETARG_TEXT_PP(3)));
	Jsonb *columns = PG_ARGISNULL(4) ? nullptr : PG_GETARG_JSONB_P(4);
	CheckCollection(collection);

	int nest_level;
	ConsumerInfo *consumer = OpenConsumer(fcinfo, &nest_level);
	Protocol protocol = ConsumerProtocol(consumer);
	if (protocol == Protocol::Stream)
		CheckStreamCollection(collection);
	/* a record consumer's records say deleted = true (soft, by default); a stream's deletes
	 * remove the source's row (hard, by default, with tombstones) */
	if (delete_mode == nullptr)
		delete_mode = protocol == Protocol::Stream ? "hard" : "soft";
	/* Checked as the caller: the mapping's owner, whose privileges records are applied with. */
	(void) ResolveMapping(target, protocol, delete_mode, columns, GetUserId());

	Oid types[6] = {TEXTOID, TEXTOID, OIDOID, TEXTOID, JSONBOID, OIDOID};
	Datum values[6] = {CStringGetTextDatum(consumer->name), CStringGetTextDatum(collection),
					   ObjectIdGetDatum(target), CStringGetTextDatum(delete_mode),
					   columns ? JsonbPGetDatum(columns) : (Datum) 0, ObjectIdGetDatum(GetUserId())};
	char nulls[7] = "      ";
	nulls[4] = columns ? ' ' : 'n';
	ExecAsOwner(nullptr, "INSERT INTO sequin_sync.mappings (consumer, collection, target, delete_mode, columns, owner) "
				"VALUES ($1, $2, $3::pg_catalog.regclass, $4, COALESCE($5, '{}'), $6::pg_catalog.regrole) "
				"ON CONFLICT (consumer, collection) DO UPDATE SET target = EXCLUDED.target, "
				"delete_mode = EXCLUDED.delete_mode, columns = EXCLUDED.columns, owner = EXCLUDED.owner, "
				"created_at = pg_catalog.now()",
				6, types, values, nulls);
	CloseConsumer(nest_level);
	PG_RETURN_VOID();
}

extern "C" Datum
sequin_sync_unmap_collection(PG_FUNCTION_ARGS)
{
	RequireArgument(fcinfo, 1, "collection");
	char *collection = text_to_cstring(PG_GETARG_TEXT_PP(1));
	int nest_level;
	ConsumerInfo *consumer = OpenConsumer(fcinfo, &nest_level);
	Oid types[2] = {TEXTOID, TEXTOID};
	Datum values[2] = {CStringGetTextDatum(consumer->name), CStringGetTextDatum(collection)};
	ExecAsOwner(nullptr, "DELETE FROM sequin_sync.mappings WHERE consumer = $1 AND collection = $2", 2, types, values, nullptr);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("collection \"%s\" is not mapped for consumer \"%s\"", collection, consumer->name),
				 errhint("The consumer's mappings are listed in sequin_sync.mappings.")));
	CloseConsumer(nest_level);
	PG_RETURN_VOID();
}

/*
 * apply(consumer, records): the worker's engine, run synchronously in the caller's transaction.
 * The jsonb is printed and parsed by the same decoder the worker uses on HTTP replies.
 */
extern "C" Datum
sequin_sync_apply(PG_FUNCTION_ARGS)
{
	RequireArgument(fcinfo, 0, "consumer");
	RequireArgument(fcinfo, 1, "records");
	Jsonb *records = PG_GETARG_JSONB_P(1);
	if (!JB_ROOT_IS_ARRAY(records) || JB_ROOT_IS_SCALAR(records))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("records must be a JSON array"),
				 errdetail("sequin_sync.apply() takes an array of record objects, as found under \"record\" in a /next reply."),
				 errhint("Wrap a single record in brackets: '[{\"id\": ...}]'.")));

	SS_INIT_MATERIALIZED_SRF(fcinfo);
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "sequin_sync apply", ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);

	int nest_level;
	ConsumerInfo *consumer = OpenConsumer(fcinfo, &nest_level);

	char *text = JsonbToCString(nullptr, &records->root, VARSIZE(records));
	json::Document *doc = NewDocument(cxt);
	if (!doc->Parse(text, strlen(text)))
		elog(ERROR, "could not re-parse jsonb text: %s at byte %zu", doc->ErrorMessage(), doc->ErrorOffset());
	const json::Node *root = doc->Root();
	const json::Node **nodes = (const json::Node **) palloc(sizeof(json::Node *) * Max(root->len, 1));
	int n = 0;
	for (const json::Node *r = doc->First(root); r != nullptr; r = doc->Next(r))
		nodes[n++] = r;

	ApplyBatch batch;
	InitBatch(&batch, consumer->name, ConsumerProtocol(consumer), doc, nodes, n, cxt);
	RoleSwitch rs;
	BeginAsRole(&rs, ExtensionOwner(), false);
	ApplyRecords(&batch);
	WriteDeadLetters(&batch);
	EndAsRole(&rs);
	CloseConsumer(nest_level);

	Datum values[5] = {Int64GetDatum(batch.counts.inserted), Int64GetDatum(batch.counts.updated),
					   Int64GetDatum(batch.counts.deleted), Int64GetDatum(batch.counts.skipped),
					   Int64GetDatum(batch.counts.dead_lettered)};
	bool nulls[5] = {false, false, false, false, false};
	MemoryContextSwitchTo(old);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	MemoryContextDelete(cxt);
	return (Datum) 0;
}

/*
 * retry_dead_letters(consumer): applies parked records again, oldest first, through the same
 * engine.  Those that now succeed - or are skipped because a newer version is already stored -
 * are removed; the rest keep their row with the new error and one more attempt.
 */
extern "C" Datum
sequin_sync_retry_dead_letters(PG_FUNCTION_ARGS)
{
	int nest_level = BeginSafeSearchPath();
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "sequin_sync retry", ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	SpiConnect();

	/* The consumers to retry: the one named, or all the caller may use. */
	char *only = PG_ARGISNULL(0) ? nullptr : text_to_cstring(PG_GETARG_TEXT_PP(0));
	int nconsumers = 0;
	char **names;
	if (only != nullptr) {
		ConsumerInfo *c = LookupConsumer(only, false);
		CheckConsumerAccess(c);
		names = (char **) palloc(sizeof(char *));
		names[nconsumers++] = c->name;
	} else {
		RoleSwitch rs;
		BeginAsRole(&rs, ExtensionOwner(), false);
		Oid types[1] = {OIDOID};
		Datum values[1] = {ObjectIdGetDatum(GetUserId())};
		SpiExec("SELECT name FROM sequin_sync.consumers c "
				"WHERE EXISTS (SELECT FROM sequin_sync.dead_letters d WHERE d.consumer = c.name) "
				"AND pg_catalog.pg_has_role($1, c.owner, 'USAGE') ORDER BY name",
				1, types, values, nullptr, true, 0);
		EndAsRole(&rs);
		names = (char **) palloc(sizeof(char *) * Max(SPI_processed, 1));
		for (uint64 i = 0; i < SPI_processed; i++)
			names[nconsumers++] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
	}

	int64 removed = 0;
	RoleSwitch rs;
	BeginAsRole(&rs, ExtensionOwner(), false);
	for (int c = 0; c < nconsumers; c++) {
		MemoryContext batch_cxt = AllocSetContextCreate(cxt, "sequin_sync retry batch", ALLOCSET_DEFAULT_SIZES);
		MemoryContextSwitchTo(batch_cxt);
		Oid types[1] = {TEXTOID};
		Datum values[1] = {CStringGetTextDatum(names[c])};
		SpiExec("SELECT id, COALESCE(record::pg_catalog.text, record_text) FROM sequin_sync.dead_letters "
				"WHERE consumer = $1 ORDER BY id FOR UPDATE",
				1, types, values, nullptr, false, 0);
		uint64 n = SPI_processed;
		if (n == 0) {
			MemoryContextSwitchTo(cxt);
			MemoryContextDelete(batch_cxt);
			continue;
		}
		int64 *ids = (int64 *) palloc(sizeof(int64) * n);
		StringInfoData all;
		initStringInfo(&all);
		appendStringInfoChar(&all, '[');
		for (uint64 i = 0; i < n; i++) {
			bool isnull;
			ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
			if (i > 0)
				appendStringInfoChar(&all, ',');
			appendStringInfoString(&all, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2));
		}
		appendStringInfoChar(&all, ']');

		json::Document *doc = NewDocument(batch_cxt);
		if (!doc->Parse(all.data, all.len))
			elog(ERROR, "could not parse dead letters of consumer \"%s\": %s", names[c], doc->ErrorMessage());
		const json::Node **nodes = (const json::Node **) palloc(sizeof(json::Node *) * n);
		int k = 0;
		for (const json::Node *r = doc->First(doc->Root()); r != nullptr; r = doc->Next(r))
			nodes[k++] = r;
		if ((uint64) k != n)
			elog(ERROR, "dead letters of consumer \"%s\" did not parse as %lu records", names[c], (unsigned long) n);

		ApplyBatch batch;
		InitBatch(&batch, names[c], ConsumerProtocol(LookupConsumer(names[c], false)), doc, nodes, k, batch_cxt);
		batch.retry = true;
		ApplyRecords(&batch);

		for (int i = 0; i < k; i++) {
			RecordResult *r = &batch.results[i];
			if (r->status == RecordStatus::Failed) {
				Oid utypes[3] = {INT8OID, TEXTOID, TEXTOID};
				Datum uvalues[3] = {Int64GetDatum(ids[i]), CStringGetTextDatum(r->error), CStringGetTextDatum(r->sqlstate)};
				SpiExec("UPDATE sequin_sync.dead_letters SET error = $2, sqlstate = $3, attempts = attempts + 1, "
						"failed_at = pg_catalog.now() WHERE id = $1",
						3, utypes, uvalues, nullptr, false, 0);
			} else {
				Oid dtypes[1] = {INT8OID};
				Datum dvalues[1] = {Int64GetDatum(ids[i])};
				SpiExec("DELETE FROM sequin_sync.dead_letters WHERE id = $1", 1, dtypes, dvalues, nullptr, false, 0);
				removed++;
			}
		}
		MemoryContextSwitchTo(cxt);
		MemoryContextDelete(batch_cxt);
	}
	EndAsRole(&rs);

	SpiFinish();
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	EndSafeSearchPath(nest_level);
	PG_RETURN_INT64(removed);
}

extern "C" Datum
sequin_sync_prune_tombstones(PG_FUNCTION_ARGS)
{
	int nest_level = BeginSafeSearchPath();
	SpiConnect();
	RoleSwitch rs;
	BeginAsRole(&rs, ExtensionOwner(), false);
	int64 pruned = PruneTombstones();
	EndAsRole(&rs);
	SpiFinish();
	EndSafeSearchPath(nest_level);
	PG_RETURN_INT64(pruned);
}

/* Wakes the launcher at commit (the install script calls it, so a new installation starts at once). */
extern "C" Datum
sequin_sync_wake_workers(PG_FUNCTION_ARGS)
{
	WakeOnCommit(nullptr);
	PG_RETURN_VOID();
}
