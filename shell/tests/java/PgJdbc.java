// The PostgreSQL JDBC driver (Debian's libpostgresql-jdbc-java) reads runql over the wire
// protocol: run by shell/tests/it/postgres.rs as `java -cp postgresql.jar:. PgJdbc PORT PASSWORD`.
import java.sql.*;

public class PgJdbc {
    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/runql";
        try (Connection c = DriverManager.getConnection(url, "reader", args[1])) {
            DatabaseMetaData meta = c.getMetaData();
            StringBuilder tables = new StringBuilder();
            try (ResultSet rs = meta.getTables(null, "public", "%", new String[] {"TABLE", "VIEW"})) {
                while (rs.next()) tables.append(rs.getString("TABLE_NAME")).append(',');
            }
            System.out.println("tables=" + tables);
            StringBuilder cols = new StringBuilder();
            try (ResultSet rs = meta.getColumns(null, "public", "runs", "%")) {
                while (rs.next()) cols.append(rs.getString("COLUMN_NAME")).append(',');
            }
            System.out.println("runs_columns=" + cols);
            try (PreparedStatement ps = c.prepareStatement(
                    "SELECT count(*) AS n FROM runs WHERE project = ?")) {
                ps.setString(1, "mnist-cnn");
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    System.out.println("mnist_runs=" + rs.getLong(1));
                }
            }
            try (Statement s = c.createStatement()) {
                s.executeUpdate("CREATE TABLE x (a int)");
                System.out.println("write=accepted");
            } catch (SQLException e) {
                System.out.println("write=" + e.getSQLState());
            }
        }
    }
}
