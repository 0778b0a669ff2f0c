"""The operations of the CRUD specification files, on PyMongo's synchronous API (the
driver is the same as the service's asynchronous one), each returning the result in the
shape the files expect. An argument not listed here makes the test skip with that reason."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pymongo import (
    DeleteMany,
    DeleteOne,
    InsertOne,
    ReplaceOne,
    ReturnDocument,
    UpdateMany,
    UpdateOne,
)
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError
from pymongo.results import BulkWriteResult, UpdateResult

from tests.store.spec.match import Unsupported

Document = dict[str, Any]
Handler = Callable[[Any, dict[str, Any]], Any]

# camelCase argument -> PyMongo keyword; reads a few, writes a few
KEYWORDS = {
    "filter": "filter",
    "projection": "projection",
    "skip": "skip",
    "limit": "limit",
    "batchSize": "batch_size",
    "comment": "comment",
    "hint": "hint",
    "collation": "collation",
    "let": "let",
    "allowDiskUse": "allow_disk_use",
    "maxTimeMS": "max_time_ms",
    "upsert": "upsert",
    "arrayFilters": "array_filters",
    "ordered": "ordered",
    "bypassDocumentValidation": "bypass_document_validation",
    "sort": "sort",
}


def _kwargs(args: Mapping[str, Any], *names: str, camel: bool = False) -> dict[str, Any]:
    """PyMongo keywords; camel: the method passes its keywords on as command fields."""
    unknown = set(args) - set(names)
    if unknown:
        raise Unsupported(f"argument {min(unknown)}")
    return {name if camel else KEYWORDS.get(name, name): value for name, value in args.items()}


def _ids(ids: list[Any]) -> dict[str, Any]:
    return {str(i): v for i, v in enumerate(ids)}


def _update_result(result: UpdateResult) -> Document:
    res: Document = {
        "matchedCount": result.matched_count,
        "modifiedCount": result.modified_count,
        "upsertedCount": 0 if result.upserted_id is None else 1,
    }
    if result.upserted_id is not None:
        res["upsertedId"] = result.upserted_id
    return res


def bulk_result(counts: Mapping[str, Any]) -> Document:
    """The spec's BulkWriteResult from PyMongo's counts (a result's or an error's)."""
    return {
        "deletedCount": counts["nRemoved"],
        "insertedCount": counts["nInserted"],
        "matchedCount": counts["nMatched"],
        "modifiedCount": counts["nModified"],
        "upsertedCount": counts["nUpserted"],
        "upsertedIds": {str(u["index"]): u["_id"] for u in counts.get("upserted", [])},
    }


def _write_model(request: Mapping[str, Any]) -> Any:
    ((name, args),) = request.items()
    write = {"hint", "collation", "upsert", "arrayFilters", "sort"}
    if name == "insertOne":
        return InsertOne(**_kwargs(args, "document"))
    if name in ("updateOne", "updateMany"):
        model = UpdateOne if name == "updateOne" else UpdateMany
        return model(**_kwargs(args, "filter", "update", *write))
    if name == "replaceOne":
        return ReplaceOne(**_kwargs(args, "filter", "replacement", *write))
    if name in ("deleteOne", "deleteMany"):
        delete = DeleteOne if name == "deleteOne" else DeleteMany
        return delete(**_kwargs(args, "filter", "hint", "collation"))
    raise Unsupported(f"bulk request {name}")


def _bulk_write(coll: Collection[Document], args: dict[str, Any]) -> Document:
    requests = [_write_model(r) for r in args.pop("requests")]
    options = _kwargs(args, "ordered", "comment", "let", "bypassDocumentValidation")
    result: BulkWriteResult = coll.bulk_write(requests, **options)
    return bulk_result(result.bulk_api_result)


def _find_one_and(coll: Collection[Document], name: str, args: dict[str, Any]) -> Any:
    common = ("filter", "projection", "sort", "hint", "collation", "comment", "let", "maxTimeMS")
    if name == "findOneAndDelete":
        return coll.find_one_and_delete(**_kwargs(args, *common))
    after = args.pop("returnDocument", "Before") == "After"
    extra = ("upsert", "arrayFilters")
    kwargs: dict[str, Any] = {
        "return_document": ReturnDocument.AFTER if after else ReturnDocument.BEFORE
    }
    if "bypassDocumentValidation" in args:  # a command field PyMongo passes on as is
        kwargs["bypassDocumentValidation"] = args.pop("bypassDocumentValidation")
    if name == "findOneAndUpdate":
        return coll.find_one_and_update(**_kwargs(args, *common, *extra, "update"), **kwargs)
    kwargs |= _kwargs(args, *common, *extra, "replacement")
    return coll.find_one_and_replace(**kwargs)


READ = ("filter", "projection", "skip", "limit", "batchSize", "comment", "hint", "sort")
READ_MORE = (*READ, "collation", "let", "allowDiskUse", "maxTimeMS")
WRITE = ("filter", "upsert", "hint", "collation", "comment", "let", "bypassDocumentValidation")
AGGREGATE = ("pipeline", "batchSize", "allowDiskUse", "collation", "comment", "let", "hint")

COLLECTION_OPERATIONS: dict[str, Handler] = {
    "find": lambda c, a: list(c.find(**_kwargs(a, *READ_MORE))),
    "findOne": lambda c, a: c.find_one(**_kwargs(a, *READ_MORE)),
    "insertOne": lambda c, a: {
        "insertedId": c.insert_one(
            **_kwargs(a, "document", "comment", "bypassDocumentValidation")
        ).inserted_id
    },
    "insertMany": lambda c, a: {
        "insertedIds": _ids(
            c.insert_many(
                **_kwargs(a, "documents", "ordered", "comment", "bypassDocumentValidation")
            ).inserted_ids
        )
    },
    "updateOne": lambda c, a: _update_result(
        c.update_one(**_kwargs(a, *WRITE, "update", "arrayFilters", "sort"))
    ),
    "updateMany": lambda c, a: _update_result(
        c.update_many(**_kwargs(a, *WRITE, "update", "arrayFilters"))
    ),
    "replaceOne": lambda c, a: _update_result(
        c.replace_one(**_kwargs(a, *WRITE, "replacement", "sort"))
    ),
    "deleteOne": lambda c, a: {
        "deletedCount": c.delete_one(
            **_kwargs(a, "filter", "hint", "collation", "comment", "let")
        ).deleted_count
    },
    "deleteMany": lambda c, a: {
        "deletedCount": c.delete_many(
            **_kwargs(a, "filter", "hint", "collation", "comment", "let")
        ).deleted_count
    },
    "bulkWrite": _bulk_write,
    "countDocuments": lambda c, a: c.count_documents(
        **_kwargs(a, "filter", "skip", "limit", "collation", "hint", "comment", "maxTimeMS")
    ),
    "estimatedDocumentCount": lambda c, a: c.estimated_document_count(
        **_kwargs(a, "comment", "maxTimeMS", camel=True)
    ),
    "distinct": lambda c, a: c.distinct(
        a.pop("fieldName"), **_kwargs(a, "filter", "collation", "comment", "hint")
    ),
    "aggregate": lambda c, a: list(c.aggregate(**_kwargs(a, *AGGREGATE, "maxTimeMS", camel=True))),
    "findOneAndDelete": lambda c, a: _find_one_and(c, "findOneAndDelete", a),
    "findOneAndUpdate": lambda c, a: _find_one_and(c, "findOneAndUpdate", a),
    "findOneAndReplace": lambda c, a: _find_one_and(c, "findOneAndReplace", a),
    "createIndex": lambda c, a: c.create_index(
        list(a.pop("keys").items()), **_kwargs(a, "name", "unique")
    ),
}

DATABASE_OPERATIONS: dict[str, Callable[[Database[Document], dict[str, Any]], Any]] = {
    "aggregate": lambda d, a: list(d.aggregate(**_kwargs(a, *AGGREGATE, "maxTimeMS", camel=True))),
    "createCollection": lambda d, a: d.create_collection(a.pop("collection"), **_kwargs(a)),
    "dropCollection": lambda d, a: d.drop_collection(a.pop("collection")),
}


def run_operation(target: Any, name: str, arguments: Mapping[str, Any]) -> Any:
    """Run one operation on a collection or database entity and return its result."""
    args = dict(arguments)
    if isinstance(target, Collection):
        handler = COLLECTION_OPERATIONS.get(name)
    elif isinstance(target, Database):
        handler = DATABASE_OPERATIONS.get(name)
    else:
        handler = None
    if handler is None:
        raise Unsupported(f"operation {name}")
    return handler(target, args)


def error_result(error: Exception) -> Document | None:
    """The partial result a failed bulk write reports, in the spec's shape."""
    if isinstance(error, BulkWriteError):
        return bulk_result(error.details)
    return None
