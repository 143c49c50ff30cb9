package dev.classcache.demo.owner;

import java.time.LocalDate;

public record VisitView(Long id, LocalDate date, String description) {

	static VisitView of(Visit visit) {
		return new VisitView(visit.getId(), visit.getDate(), visit.getDescription());
	}

}
