//! The migrations apply, roll back and re-apply on SQLite and on PostgreSQL alike.
#![allow(clippy::unwrap_used)]

use migrations::{Migrator, MigratorTrait as _};
use sea_orm_migration::SchemaManager;
use sea_orm_migration::sea_orm::{ConnectionTrait as _, DatabaseConnection};

const TABLES: [&str; 10] = [
    "bots",
    "tasks",
    "task_events",
    "attendances",
    "attendance_services",
    "actions",
    "action_triggers",
    "incidents",
    "communications",
    "unclassified_reports",
];

async fn tables_present(db: &DatabaseConnection) -> Vec<&'static str> {
    let manager = SchemaManager::new(db);
    let mut present = Vec::new();
    for table in TABLES {
        if manager.has_table(table).await.unwrap() {
            present.push(table);
        }
    }
    present
}

async fn round_trip(db: &DatabaseConnection) {
    Migrator::up(db, None).await.unwrap();
    assert_eq!(tables_present(db).await, TABLES);
    let manager = SchemaManager::new(db);
    for (table, index) in [
        ("bots", "ux_bots_endpoint"),
        ("tasks", "ix_tasks_dispatch"),
        ("task_events", "ix_task_events_task"),
        ("attendances", "ix_attendances_day_channel"),
        ("incidents", "ux_incidents_open"),
        ("communications", "ix_communications_incident"),
    ] {
        assert!(manager.has_index(table, index).await.unwrap(), "{table} lacks {index}");
    }
    Migrator::up(db, None).await.unwrap();
    assert!(Migrator::get_pending_migrations(db).await.unwrap().is_empty(), "up is idempotent");
    Migrator::down(db, None).await.unwrap();
    assert!(tables_present(db).await.is_empty(), "down removes every table");
    Migrator::up(db, None).await.unwrap();
    assert_eq!(tables_present(db).await, TABLES);
}

#[tokio::test]
async fn sqlite_schema_round_trips_in_wal_mode() {
    let path = std::env::temp_dir().join(format!("botline-migrations-{}.db", std::process::id()));
    let db = migrations::connect(&format!("sqlite://{}?mode=rwc", path.display())).await.unwrap();
    round_trip(&db).await;
    let mode = db
        .query_one_raw(sea_orm_migration::sea_orm::Statement::from_string(
            db.get_database_backend(),
            "PRAGMA journal_mode",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<String>(0)
        .unwrap();
    assert_eq!(mode, "wal");
    db.close().await.unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

#[tokio::test]
async fn postgres_schema_round_trips() {
    let admin_url = std::env::var("BOTLINE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("botline_test_migrations_{}", std::process::id());
    let admin = migrations::connect(&admin_url).await.expect("PostgreSQL must be running");
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .unwrap();
    admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.unwrap();
    let server = admin_url.rsplit_once('/').unwrap().0;
    let db = migrations::connect(&format!("{server}/{name}")).await.unwrap();
    round_trip(&db).await;
    db.close().await.unwrap();
    admin.execute_unprepared(&format!("DROP DATABASE {name} WITH (FORCE)")).await.unwrap();
}
